"""A Ray cluster nbserve starts itself (no address given) has no dashboard: Ray's Jobs API on
127.0.0.1:8265 takes no credentials, and would run any local user's code as this user."""

import os
import subprocess
import sys
import tempfile

from jupyter_app import free_port

PROBE = """
import socket, sys
import ray
from nbserve.ray_serve.serving import RayServing

serving = RayServing(None, http_address=sys.argv[1])
node = ray._private.worker._global_node
with socket.socket() as s:
    dashboard_port_open = s.connect_ex(("127.0.0.1", 8265)) == 0
print("RESULT", bool(node.address_info.get("webui_url")), dashboard_port_open, flush=True)
serving.shutdown()
"""


def test_a_local_cluster_starts_without_the_dashboard_and_its_jobs_api():
    # A temp dir of its own: Ray finds no other cluster on this machine to join, and starts one.
    ray_tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(TMPDIR=ray_tmp, RAY_TMPDIR=ray_tmp, RAY_AUTH_MODE="disabled")
    result = subprocess.run([sys.executable, "-c", PROBE, f"http://127.0.0.1:{free_port()}"],
                            capture_output=True, text=True, env=env, timeout=240)
    line = next((line for line in result.stdout.splitlines() if line.startswith("RESULT")), None)
    assert line is not None, result.stderr[-3000:]
    assert line.split()[1:] == ["False", "False"], line
