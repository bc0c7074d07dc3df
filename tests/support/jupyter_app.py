"""A real Jupyter server (or JupyterLab) in a subprocess, and kernels started through its REST API."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from jupyter_client import BlockingKernelClient

TOKEN = "nbserve-test-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Jupyter:
    """``call(method, path, body, token=...)`` -> (status, headers, body) against the server."""

    def __init__(self, root, runtime_dir, env, app="server", args=(), startup_seconds=60):
        """``jupyter APP`` (``server`` or ``lab``) serving ``root``, nbserve's extension enabled
        (an editable install does not enable it), with ``args`` added."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.runtime_dir = runtime_dir
        self.log = open(root / "jupyter.log", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyter", app, "--no-browser", f"--port={self.port}",
             "--ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
             "--ServerApp.jpserver_extensions={'nbserve': True}", "--allow-root", *args],
            cwd=root, env={**env, "JUPYTER_RUNTIME_DIR": str(runtime_dir)},
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + startup_seconds
        while self.call("GET", "api/status")[0] != 200:
            assert self.process.poll() is None, (root / "jupyter.log").read_text()
            assert time.monotonic() < deadline, "Jupyter did not start"
            time.sleep(0.3)

    def call(self, method, path, body=None, token=TOKEN, headers=None, timeout=60):
        headers = dict(headers or {})
        if token:
            headers["Authorization"] = f"token {token}"
        if body is not None:
            headers.setdefault("Content-Type", "application/octet-stream")
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()
        except urllib.error.URLError:
            return None, {}, b""

    def json(self, method, path, body=None, **kwargs):
        status, _, raw = self.call(method, path, body, **kwargs)
        return status, json.loads(raw) if raw else None

    def start_kernel(self) -> "ServerKernel":
        status, model = self.json("POST", "api/kernels", b"{}", headers={"Content-Type": "application/json"})
        assert status == 201, model
        return ServerKernel(self, model["id"])

    def stop(self):
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


class ServerKernel:
    """A kernel Jupyter started, driven through its connection file as a notebook front end is."""

    def __init__(self, jupyter, kernel_id):
        self.jupyter, self.id = jupyter, kernel_id
        self.client = BlockingKernelClient(
            connection_file=os.path.join(jupyter.runtime_dir, f"kernel-{kernel_id}.json"))
        self.client.load_connection_file()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def run(self, code: str) -> str:
        """Run code; returns what it printed; fails on an error."""
        printed, errors = [], []

        def output(message):
            content = message["content"]
            if message["msg_type"] == "stream":
                printed.append(content["text"])
            elif message["msg_type"] == "error":
                errors.append("\n".join(content["traceback"]))

        self.client.execute_interactive(code, timeout=180, output_hook=output)
        assert not errors, errors[0]
        return "".join(printed)

    def value(self, expression: str):
        return json.loads(self.run(f"import json as _json; print(_json.dumps({expression}))"))

    def shutdown(self):
        self.client.stop_channels()
        assert self.jupyter.call("DELETE", f"api/kernels/{self.id}")[0] == 204
