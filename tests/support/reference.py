"""The real TorchServe 0.12, started by the tests as the reference nbserve is compared with."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.support.jupyter_app import free_port

PORTS = {"inference": 18080, "management": 18081, "metrics": 18082}


def available() -> bool:
    return shutil.which("torchserve") is not None and shutil.which("java") is not None


class TorchServe:
    """A TorchServe on loopback with its own model store; models are registered per test."""

    def __init__(self, workdir: Path, ports: dict[str, int] = PORTS, settings: str = ""):
        """``settings``: more config.properties lines (``metrics_mode=prometheus``, say)."""
        self.workdir = workdir
        self.ports = ports
        self.store = workdir / "model-store"
        self.store.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "config.properties"
        self.grpc_ports = {"inference": free_port(), "management": free_port()}
        self.config.write_text(
            "".join(f"{kind}_address=http://127.0.0.1:{port}\n" for kind, port in ports.items())
            + f"model_store={self.store}\n"
            # gRPC's ports too, so that two TorchServes can run side by side.
            + f"grpc_inference_port={self.grpc_ports['inference']}\n"
            + f"grpc_management_port={self.grpc_ports['management']}\n"
            "disable_token_authorization=true\nenable_model_api=true\n"
            "default_workers_per_model=1\n" + settings
        )
        self.registered: set[str] = set()

    def url(self, kind: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[kind]}/{path.lstrip('/')}"

    def start(self) -> None:
        self.stop()
        # The Java server outlives this call: give it a log file, not pipes we would wait on.
        with open(self.workdir / "torchserve.out", "wb") as log:
            subprocess.run(["torchserve", "--start", "--ncs", "--ts-config", str(self.config)],
                           check=True, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                           env=self._env)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if self.request("inference", "ping")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"TorchServe did not start; see {self.workdir}/logs")

    def stop(self) -> None:
        subprocess.run(["torchserve", "--stop"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, cwd=self.workdir, env=self._env)

    @property
    def _env(self) -> dict:
        # TorchServe keeps its pid file in TMPDIR: a folder of its own lets two run side by side.
        return {**os.environ, "TMPDIR": str(self.workdir)}

    def request(self, kind: str, path: str, method: str = "GET", body: bytes | None = None,
                headers: dict | None = None, timeout: float = 120) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url(kind, path), data=body, method=method,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def register(self, archive: Path, **params) -> str:
        """Copy ``archive`` into the store and load it with one worker; returns its name."""
        name = params.pop("model_name", archive.name.split(".")[0])
        if name in self.registered:
            self.request("management", f"models/{name}", "DELETE")
        target = self.store / archive.name
        if archive.is_dir():
            shutil.copytree(archive, target, dirs_exist_ok=True)
        else:
            shutil.copy(archive, target)
        query = urllib.parse.urlencode({"url": archive.name, "model_name": name,
                                        "initial_workers": 1, "synchronous": "true", **params})
        status, body = self.request("management", f"models?{query}", "POST")
        if status != 200:
            raise RuntimeError(f"TorchServe refused {archive.name}: {status} {body[:500]!r}")
        self.registered.add(name)
        return name

    def predict(self, name: str, body: bytes, headers: dict | None = None) -> tuple[int, object]:
        headers = {"Content-Type": "application/octet-stream", **(headers or {})}
        status, raw = self.request("inference", f"predictions/{name}", "PUT", body, headers)
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw


@pytest.fixture(scope="session")
def torchserve(tmp_path_factory):
    if not available():
        pytest.skip("TorchServe (torchserve and java) is not installed")
    server = TorchServe(tmp_path_factory.mktemp("torchserve"))
    server.start()
    yield server
    server.stop()
