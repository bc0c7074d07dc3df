"""A local Ray cluster for the tests: 2 CPUs, started once per session with ``ray start``, as a
user starts a head node, and stopped at the end."""

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support.jupyter_app import free_port

#: Ray's workers bind ports in this range; outside Linux's ephemeral range, where the tests'
#: own servers take free ports.
WORKER_PORTS = (26400, 26999)


@pytest.fixture(scope="session")
def ray_cluster():
    """``address`` (host:port), ``client_address`` (ray://), and the ``http_address`` Ray
    Serve's proxy is to listen at."""
    ray = str(Path(sys.executable).with_name("ray"))
    gcs, client, http, runtime_env_agent = free_port(), free_port(), free_port(), free_port()
    # Ray 2.60's `ray start` and its drivers disagree on token authentication by default; the
    # cluster is on loopback and this machine's alone, so it is switched off for both.
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    # Ray Serve names what keeps a replica from being placed after this many seconds (30 by
    # default); sooner, so the test of it is short.
    env = {**os.environ, "RAY_SERVE_SLOW_STARTUP_WARNING_S": "5",
           "RAY_SERVE_SLOW_STARTUP_WARNING_PERIOD_S": "5"}
    started = subprocess.run(
        [ray, "start", "--head", "--num-cpus", "2", "--port", str(gcs),
         "--ray-client-server-port", str(client),
         # Left to Ray, this agent's port was sometimes 0, and Ray Client's servers failed.
         "--runtime-env-agent-port", str(runtime_env_agent), "--min-worker-port", str(WORKER_PORTS[0]),
         "--max-worker-port", str(WORKER_PORTS[1]), "--include-dashboard", "false",
         "--disable-usage-stats"], capture_output=True, text=True, env=env)
    assert started.returncode == 0, started.stderr
    try:
        yield SimpleNamespace(address=f"127.0.0.1:{gcs}", client_address=f"ray://127.0.0.1:{client}",
                              http_address=f"http://127.0.0.1:{http}")
    finally:
        import ray as ray_driver

        ray_driver.shutdown()  # a driver whose cluster stops under it exits the process
        subprocess.run([ray, "stop"], capture_output=True)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved
