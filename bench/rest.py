"""Closed-loop HTTP load against ``nbserve serve``, the real TorchServe (same ``.mar``) and
LitServe (the same model and work, bench/litserve_server.py).

In one run, per model: the in-process limit (as bench/engine.py measures it), nbserve with its
defaults (process workers) and with thread workers, TorchServe with its defaults (a worker per
core, no batching) and tuned (one worker, batching), and with ``--peers torchserve,litserve``
LitServe at its defaults and tuned the same way. Bodies are the raw JPEG (``curl -T``) and/or
the multipart form (``curl -F data=@cat.jpg``, the only one LitServe reads). The load comes
from a separate process, clients on keep-alive connections, each sending the next request
when its answer arrives.

This machine's speed drifts by tens of percent within minutes, so with ``--rounds N`` every
measurement (the limit included) is taken N times, the servers' order rotating from round to
round, and each row gives the median and the range.

    python bench/rest.py                       # both models, 1/4/16 clients, 10 s a point
    python bench/rest.py --models mobilenet_v3_small --clients 8 --seconds 5 --rounds 3
    python bench/rest.py --isolation thread     # nbserve with thread workers only
    python bench/rest.py --peers torchserve,litserve --bodies raw,multipart --rounds 3
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import models  # noqa: E402
from engine import closed_loop, in_subprocess  # noqa: E402

TUNED = {"initial_workers": 1, "batch_size": 8, "max_batch_delay": 5}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float = 120, key: str | None = None) -> None:
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer")


#: The multipart body's boundary, as curl makes one.
BOUNDARY = "------------------------nbservebench0123456789"


def request_body(photo: bytes, kind: str) -> tuple[bytes, str]:
    """The body and its content type: the raw JPEG (``curl -T cat.jpg``), or the form
    ``curl -F data=@cat.jpg`` sends."""
    if kind == "raw":
        return photo, "application/octet-stream"
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"data\"; "
            'filename="cat.jpg"\r\nContent-Type: image/jpeg\r\n\r\n').encode()
    return (head + photo + f"\r\n--{BOUNDARY}--\r\n".encode(),
            f"multipart/form-data; boundary={BOUNDARY}")


def load(port: int, path: str, body: bytes, clients: int, seconds: float,
         key: str | None = None, kind: str = "raw") -> dict:
    """Closed-loop clients on keep-alive connections, each POSTing ``body`` as ``kind``
    (raw or multipart); throughput and latency. ``key``: the server's inference key, sent
    with each request."""
    local = threading.local()
    body, content_type = request_body(body, kind)
    headers = {"Content-Type": content_type}
    if key:
        headers["Authorization"] = f"Bearer {key}"

    def call() -> bool:
        if not hasattr(local, "connection"):
            local.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        local.connection.request("POST", path, body, headers)
        response = local.connection.getresponse()
        response.read()
        return response.status == 200

    latencies, elapsed, errors = closed_loop(call, clients, seconds)
    return {"throughput": len(latencies) / elapsed, "errors": errors,
            "p50_ms": statistics.median(latencies) * 1000 if latencies else None}


def load_in_subprocess(port: int, path: str, clients: int, seconds: float,
                       key: str | None = None, kind: str = "raw") -> dict:
    """The load generator in its own process, so it takes no CPU time from the server's GIL."""
    result = subprocess.run([sys.executable, __file__, "--load", str(port), path, str(clients),
                             "--seconds", str(seconds), "--bodies", kind],
                            capture_output=True, text=True, check=True,
                            env={**os.environ, "NBSERVE_BENCH_KEY": key or ""})
    return json.loads(result.stdout.strip().splitlines()[-1])


class LitServe:
    """LitServe 0.2 (uvicorn, and an inference process fed through queues) with the same
    model and work (bench/litserve_server.py), with its defaults (no batching) or tuned as
    TorchServe is (batches of 8, 5 ms). It reads form bodies only: multipart, not raw."""

    key = None
    bodies = ("multipart",)

    def __init__(self, name: str, tuned: bool):
        self.name, self.tuned, self.port = name, tuned, free_port()
        self.path = "/predict"
        self.label = "LitServe (batch 8, 5 ms)" if tuned else "LitServe (defaults)"

    def __enter__(self):
        batching = ["--max-batch-size", "8", "--batch-timeout", "0.005"] if self.tuned else []
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "litserve_server.py"), self.name,
             str(self.port), *batching], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        wait_for(f"http://127.0.0.1:{self.port}/health")
        return self

    def __exit__(self, *exc):
        # Its inference processes outlive a SIGTERM to the server, and poll while idle.
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(60)


class NBServe:
    """``nbserve serve`` with its defaults, token authorization included: every request carries
    the inference key from the key file it writes in its folder. ``isolation`` other than its
    default (process) is the one setting changed."""

    def __init__(self, mar: Path, isolation: str = "process", extra: tuple[str, ...] = ()):
        self.port, self.mar, self.isolation = free_port(), mar.absolute(), isolation
        self.extra = extra
        self.label = "nbserve (defaults)" if isolation == "process" else f"nbserve ({isolation} workers)"
        self.path, self.bodies = f"/predictions/{mar.stem}", ("raw", "multipart")

    def __enter__(self):
        ports = [self.port, free_port(), free_port()]
        self.metrics_port = ports[2]
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-nbserve-"))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nbserve", "serve", "--models", f"{self.mar.stem}={self.mar}",
             "--isolation", self.isolation, *self.extra, *[f"--{api}-address=http://127.0.0.1:{port}"
               for api, port in zip(("inference", "management", "metrics"), ports)]],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.workdir)
        key_file = self.workdir / "key_file.json"
        deadline = time.monotonic() + 120
        while not key_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("nbserve serve did not start")
            time.sleep(0.2)
        self.key = json.loads(key_file.read_text())["inference"]["key"]
        wait_for(f"http://127.0.0.1:{self.port}/ping", key=self.key)
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait(60)
        shutil.rmtree(self.workdir, ignore_errors=True)


class TorchServe:
    """TorchServe 0.12 with token authorization off (its key check is not what is measured; with
    nbserve's left on, whatever checking costs falls on nbserve's side)."""

    #: Requests carry no key.
    key = None

    def __init__(self, mar: Path, tuned: bool, workers: int = 1, batch_size: int = 8,
                 gpu: bool = False):
        self.mar, self.tuned, self.gpu = mar, tuned, gpu
        self.settings = {**TUNED, "initial_workers": workers, "batch_size": batch_size}
        self.label = (f"TorchServe ({workers} worker{'s' * (workers != 1)}, batch {batch_size}, "
                      f"5 ms)" if tuned else "TorchServe (defaults)")
        self.port, self.management = free_port(), free_port()
        self.path, self.bodies = f"/predictions/{mar.stem}", ("raw", "multipart")

    def __enter__(self):
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-ts-"))
        store = self.workdir / "store"
        store.mkdir()
        shutil.copy(self.mar, store / self.mar.name)
        (self.workdir / "config.properties").write_text(
            f"inference_address=http://127.0.0.1:{self.port}\n"
            f"management_address=http://127.0.0.1:{self.management}\n"
            f"metrics_address=http://127.0.0.1:{free_port()}\n"
            f"model_store={store}\ndisable_token_authorization=true\nenable_model_api=true\n"
            + ("" if self.gpu else "number_of_gpu=0\n"))
        with open(self.workdir / "ts.log", "wb") as log:
            subprocess.run(["torchserve", "--start", "--ncs", "--ts-config",
                            str(self.workdir / "config.properties")],
                           stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, check=True)
        wait_for(f"http://127.0.0.1:{self.port}/ping")
        params = {"url": self.mar.name, "synchronous": "true"}
        params.update(self.settings if self.tuned else {"initial_workers": os.cpu_count()})
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.management}/models?{urllib.parse.urlencode(params)}", method="POST")
        urllib.request.urlopen(request, timeout=300).read()
        return self

    def __exit__(self, *exc):
        subprocess.run(["torchserve", "--stop"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, cwd=self.workdir)
        shutil.rmtree(self.workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(models.MODELS))
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--isolation", default="process,thread",
                        help="nbserve's worker isolations to measure (default both).")
    parser.add_argument("--bodies", default="raw",
                        help="raw (curl -T cat.jpg) and/or multipart (curl -F data=@cat.jpg).")
    parser.add_argument("--peers", default="torchserve",
                        help="The other servers: torchserve and/or litserve (pip install "
                             "litserve).")
    parser.add_argument("--load", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        port, path, clients = args.load
        print(json.dumps(load(int(port), path, models.photo(), int(clients), args.seconds,
                              key=os.environ.get("NBSERVE_BENCH_KEY") or None,
                              kind=args.bodies)))
        return
    bodies, peers = args.bodies.split(","), args.peers.split(",")

    clients = [int(c) for c in args.clients.split(",")]
    print("| model | server | body | clients | req/s | range | of limit | p50 (ms) | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        mar = models.build(name)
        servers = [lambda i=isolation: NBServe(mar, i) for isolation in args.isolation.split(",")]
        if "torchserve" in peers:
            servers += [lambda: TorchServe(mar, tuned=False), lambda: TorchServe(mar, tuned=True)]
        if "litserve" in peers:
            servers += [lambda: LitServe(name, tuned=False), lambda: LitServe(name, tuned=True)]
        limits, runs = [], defaultdict(list)
        for round_ in range(args.rounds):
            limits.append(in_subprocess("limit", name, "--seconds", str(args.seconds)))
            turn = round_ % len(servers)
            for make in servers[turn:] + servers[:turn]:
                with make() as server:
                    for kind in [b for b in bodies if b in server.bodies]:
                        for n in clients:
                            runs[server.label, kind, n].append(load_in_subprocess(
                                server.port, server.path, n, args.seconds, server.key, kind))
        limit = statistics.median(run["limit"] for run in limits)
        best_batch = statistics.mode(run["best_batch"] for run in limits)
        batch1_ms = statistics.median(run["batch1_ms"] for run in limits)
        print(f"| {name} | in-process limit (batch {best_batch}; batch-1 {batch1_ms:.1f} ms) "
              f"| - | - | {limit:.1f} | {spread(run['limit'] for run in limits)} | 1.00 | - | - |")
        for (label, kind, n), measured in sorted(runs.items(), key=lambda item: item[0][1:]):
            throughput = statistics.median(run["throughput"] for run in measured)
            p50s = [run["p50_ms"] for run in measured if run["p50_ms"] is not None]
            p50 = f"{statistics.median(p50s):.1f}" if p50s else "-"
            print(f"| {name} | {label} | {kind} | {n} | {throughput:.1f} "
                  f"| {spread(run['throughput'] for run in measured)} | {throughput / limit:.2f} "
                  f"| {p50} | {sum(run['errors'] for run in measured)} |", flush=True)


def spread(values) -> str:
    """The range of a row's measurements, "-" for one."""
    values = list(values)
    return f"{min(values):.1f}-{max(values):.1f}" if len(values) > 1 else "-"


if __name__ == "__main__":
    main()
