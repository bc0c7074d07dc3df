"""A Ray cluster nbserve starts itself (no address given) is a new one, never the cluster named
in /tmp/ray (which any local user can write), and has no dashboard: Ray's Jobs API on
127.0.0.1:8265 takes no credentials, and would run any local user's code as this user."""

import os
import subprocess
import sys

from tests.support.jupyter_app import free_port

PROBE = """
import socket, sys
import ray
from nbserve.ray_serve.serving import RayServing

serving = RayServing(None, http_address=sys.argv[1])
node = ray._private.worker._global_node
with socket.socket() as s:
    dashboard_port_open = s.connect_ex(("127.0.0.1", 8265)) == 0
print("RESULT", bool(node.address_info.get("webui_url")), dashboard_port_open,
      ray.get_runtime_context().gcs_address, flush=True)
serving.shutdown()
"""


def test_a_local_cluster_is_new_and_has_no_dashboard_or_jobs_api(ray_cluster):
    """The tests' cluster runs, named in /tmp/ray: nbserve starts another rather than join it."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="disabled")
    result = subprocess.run([sys.executable, "-c", PROBE, f"http://127.0.0.1:{free_port()}"],
                            capture_output=True, text=True, env=env, timeout=240)
    line = next((line for line in result.stdout.splitlines() if line.startswith("RESULT")), None)
    assert line is not None, result.stderr[-3000:]
    webui, dashboard, gcs = line.split()[1:]
    assert (webui, dashboard) == ("False", "False"), line
    assert gcs != ray_cluster.address, "it joined the cluster named in /tmp/ray"
