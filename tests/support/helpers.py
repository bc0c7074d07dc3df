"""Assertions and small helpers shared by the tests."""

import http.client
import json
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by its relative POSIX path, with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_same_answer(ours, theirs, tolerance=1e-5):
    """Same JSON shape, same keys in the same order, numbers equal within ``tolerance``."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and list(ours) == list(theirs), (ours, theirs)
        for key in theirs:
            assert_same_answer(ours[key], theirs[key], tolerance)
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), (ours, theirs)
        for a, b in zip(ours, theirs):
            assert_same_answer(a, b, tolerance)
    elif isinstance(theirs, float) or isinstance(ours, float):
        assert abs(ours - theirs) <= tolerance, (ours, theirs)
    else:
        assert ours == theirs


class Client:
    """Real HTTP on loopback: ``call("PUT", "/predictions/m", body)`` -> (status, headers, body).

    ``key``: sent as ``Authorization: Bearer <key>`` unless a call names its own.
    """

    def __init__(self, base: str, key: str | None = None):
        self.host, self.port = urlsplit(base).hostname, urlsplit(base).port
        self.key = key

    def call(self, method, path, body=None, headers=None, timeout=60):
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            headers = dict(headers or {})
            if self.key and "Authorization" not in headers:
                headers["Authorization"] = f"Bearer {self.key}"
            connection.request(method, path, body=body, headers=headers,
                               encode_chunked=headers.get("Transfer-Encoding") == "chunked")
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def json(self, method, path, body=None, headers=None):
        status, _, raw = self.call(method, path, body, headers)
        return status, json.loads(raw)


class RoutedClient(Client):
    """A client of one port that answers several APIs (Ray Serve's proxy): each call carries
    the key of the API its path belongs to."""

    def __init__(self, base: str, keys: dict[str, str]):
        super().__init__(base)
        self.keys = keys

    def call(self, method, path, body=None, headers=None, timeout=60):
        from nbserve.api.routes import api_of

        headers = dict(headers or {})
        if api_of(path) in self.keys:
            headers.setdefault("Authorization", f"Bearer {self.keys[api_of(path)]}")
        return super().call(method, path, body, headers, timeout)


def loopback_config(**settings):
    """A ServerConfig whose three APIs take free loopback ports; ``settings`` are
    config.properties keys."""
    from nbserve.config import ServerConfig

    config = ServerConfig()
    config.values.update({f"{api}_address": "http://127.0.0.1:0"
                          for api in ("inference", "management", "metrics")})
    config.values.update(settings)
    return config


def start_server(engine, **settings):
    """nbserve's HTTP server for ``engine`` on free loopback ports, its keys in a private
    folder, and a client per API holding that API's key; ``settings`` are config.properties
    keys."""
    import tempfile

    from nbserve.api.http import Server

    config = loopback_config(**settings)
    key_file = Path(tempfile.mkdtemp(prefix="nbserve-keys-")) / "key_file.json"
    server = Server(engine, config, key_file=key_file).start()
    return server, clients_of(server.urls, server.tokens.keys if server.tokens else {})


def nbserve_serve(*flags: str, cwd: Path, env: dict | None = None):
    """``nbserve serve FLAGS`` started in ``cwd`` on free loopback ports, once its APIs
    listen: ``(process, {api: port}, its stderr lines, which go on growing)``.
    AssertionError, with what it said, if it exits instead."""
    import os
    import subprocess
    import sys

    from tests.support.jupyter_app import free_port

    ports = {api: free_port() for api in ("inference", "management", "metrics")}
    process = subprocess.Popen(
        [sys.executable, "-m", "nbserve", "serve", *flags,
         *(f"--{api}-address=http://127.0.0.1:{port}" for api, port in ports.items())],
        stderr=subprocess.PIPE, text=True, cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    lines: list[str] = []
    while not any("metrics API at" in line for line in lines):
        line = process.stderr.readline()
        if not line:
            process.wait()
            raise AssertionError(f"nbserve serve exited ({process.returncode}): {''.join(lines)}")
        lines.append(line)
    # Read on, so a server that logs much (a 4xx is a warning line) never blocks on a full pipe.
    threading.Thread(target=lambda: lines.extend(iter(process.stderr.readline, "")),
                     daemon=True).start()
    return process, ports, lines


def clients_of(urls: dict[str, str], keys: dict[str, str]) -> dict[str, Client]:
    """A client per API, each holding its API's key (the metrics API takes none)."""
    return {api: Client(url, keys.get(api)) for api, url in urls.items()}


class Stream:
    """Closed-loop clients sending one photo until stopped; every answer is recorded."""

    def __init__(self, client: Client, path: str, body: bytes, clients: int = 4):
        self.client, self.path, self.body = client, path, body
        self.statuses: list[int] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self):
        while not self._stop.is_set():
            try:
                status, _, raw = self.client.call("POST", self.path, self.body, timeout=120)
                self.statuses.append(status)
                if status != 200:
                    self.failures.append(f"{status}: {raw[:300]!r}")
            except OSError as e:  # a connection refused or dropped is a lost request too
                self.failures.append(repr(e))

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        time.sleep(1)  # requests sent after the event are still in the count
        self._stop.set()
        for thread in self._threads:
            thread.join()


def timed_chunks(url: str, headers: dict | None = None) -> tuple[int, list[tuple[float, bytes]]]:
    """POST to ``url``; the status, and each piece of the body with when it arrived."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    started = time.monotonic()
    connection.request("POST", parts.path, b"go", headers or {})
    response = connection.getresponse()
    pieces = []
    while chunk := response.read1(65536):
        pieces.append((time.monotonic() - started, chunk))
    connection.close()
    return response.status, pieces


def metric_families(text: str) -> dict:
    """A Prometheus text exposition's metric families by name, as prometheus_client's parser
    reads them (which also checks the text is well formed)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {family.name: family for family in text_string_to_metric_families(text)}


def metric_samples(text: str) -> list:
    """Every sample of a Prometheus text exposition."""
    return [sample for family in metric_families(text).values() for sample in family.samples]
