"""TorchServe's ``benchmark-ab.py``, for a served model: ``nbserve bench`` and ``%bench``.

The parameters are benchmark-ab's, with its meanings and defaults (``concurrency`` 10,
``requests`` 100, ``content_type`` application/jpg, ``workers`` 1, ``batch_size`` 1,
``batch_delay`` 200 ms, ``inference_model_url`` predictions/benchmark), and so is the report:
``ab_report.csv`` with its columns and ``predict_latency.png`` (an SVG where matplotlib is not
installed) in ``report_location/benchmark``.

The load runs in a process of its own (:func:`load`: closed-loop clients on keep-alive
connections, as ``ab -k`` runs them), so it takes no time from the server's GIL, and it reports
how busy it was itself: a load process that used most of a core was the limit, not the server.
"""

from __future__ import annotations

import csv
import html
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from nbserve.benchmark.plots import html_image, latency_histogram, latency_plot
from nbserve.serving.stats import nearest_rank

#: benchmark-ab's ``ab_report.csv`` columns, in its order.
CSV_COLUMNS = ("Benchmark", "Batch size", "Batch delay", "Workers", "Model", "Concurrency",
               "Input", "Requests", "TS failed requests", "TS throughput", "TS latency P50",
               "TS latency P90", "TS latency P99", "TS latency mean", "TS error rate",
               "Model_p50", "Model_p90", "Model_p99")
#: A load process busier than this share of one core was the limit, not the server.
GENERATOR_LIMIT = 0.9


@dataclass
class BenchSettings:
    """What to measure, as benchmark-ab's options name it."""

    url: str | None = None
    input: str | None = None
    content_type: str = "application/jpg"
    concurrency: int = 10
    requests: int = 100
    workers: int = 1
    batch_size: int = 1
    batch_delay: float = 200
    inference_model_url: str = "predictions/benchmark"
    report_location: str = tempfile.gettempdir()

    @classmethod
    def from_config(cls, path: str | os.PathLike, **overrides) -> BenchSettings:
        """benchmark-ab's ``--config`` JSON (the same keys), then ``overrides`` not None."""
        values = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass
class BenchResult:
    """One measurement: what the load saw, with benchmark-ab's figures."""

    settings: BenchSettings
    latencies_ms: list[float]
    statuses: Counter
    elapsed_s: float
    #: The share of one core the load process used: near 1, the load was the limit.
    generator_busy: float
    #: Images a second the same handler does in a plain loop on the same input, when measured.
    limit: float | None = None
    server_latency_ms: dict[str, float] = field(default_factory=dict)
    report: Path | None = None

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)

    @property
    def throughput(self) -> float:
        return self.answered / self.elapsed_s if self.elapsed_s else 0.0

    def percentile(self, q: float) -> float | None:
        return nearest_rank(self.latencies_ms, q)

    @property
    def mean_ms(self) -> float | None:
        return sum(self.latencies_ms) / len(self.latencies_ms) if self.latencies_ms else None

    @property
    def generator_limited(self) -> bool:
        return self.generator_busy >= GENERATOR_LIMIT

    def csv_row(self) -> dict:
        """benchmark-ab's ab_report.csv row."""
        s = self.settings
        return {
            "Benchmark": "AB", "Batch size": s.batch_size, "Batch delay": s.batch_delay,
            "Workers": s.workers, "Model": f"[.mar]({s.url or s.inference_model_url})",
            "Concurrency": s.concurrency, "Input": f"[input]({s.input})", "Requests": self.answered,
            "TS failed requests": self.failed, "TS throughput": _round(self.throughput),
            "TS latency P50": _round(self.percentile(50)), "TS latency P90": _round(self.percentile(90)),
            "TS latency P99": _round(self.percentile(99)), "TS latency mean": _round(self.mean_ms),
            "TS error rate": _round(100 * self.failed / max(self.answered, 1)),
            "Model_p50": _round(self.server_latency_ms.get("0.5")),
            "Model_p90": _round(self.server_latency_ms.get("0.9")),
            "Model_p99": _round(self.server_latency_ms.get("0.99")),
        }

    def write_report(self, folder: str | os.PathLike | None = None) -> Path:
        """``ab_report.csv`` and the latency plot in ``folder`` (default the settings'
        ``report_location/benchmark``, as benchmark-ab writes them)."""
        folder = Path(folder or Path(self.settings.report_location) / "benchmark")
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "ab_report.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, CSV_COLUMNS)
            writer.writeheader()
            writer.writerow(self.csv_row())
        image, kind = latency_plot(self.latencies_ms)
        (folder / f"predict_latency.{kind}").write_bytes(image)
        self.report = folder
        return folder

    def __str__(self) -> str:
        p = {q: self.percentile(q) for q in (50, 90, 99)}
        lines = [f"{self.answered} requests, {self.settings.concurrency} at a time, in "
                 f"{self.elapsed_s:.1f} s: {self.throughput:.1f} req/s",
                 "latency (ms): " + ", ".join(f"p{q} {v:.1f}" for q, v in p.items() if v is not None)
                 + (f", mean {self.mean_ms:.1f}" if self.mean_ms is not None else "")]
        lines.append("answers: " + ", ".join(f"{n} x {status}" for status, n in
                                             sorted(self.statuses.items(), key=str)))
        if self.limit:
            lines.append(f"in-process limit of the same handler on the same input: "
                         f"{self.limit:.1f}/s; the server reached {self.throughput / self.limit:.2f} "
                         "of it (the rest is what serving costs beside the model: HTTP, the "
                         "queue, the trip to a worker process, and the cores the load itself "
                         f"takes, {self.generator_busy:.0%} of one here)")
        if self.generator_limited:
            lines.append(f"the load process was {self.generator_busy:.0%} busy: it, not the "
                         "server, was the limit; measure with fewer clients or from another "
                         "machine")
        if self.report:
            lines.append(f"report: {self.report / 'ab_report.csv'}")
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        s = self.settings
        figures = {"req/s": _round(self.throughput), "p50 ms": _round(self.percentile(50)),
                   "p90 ms": _round(self.percentile(90)), "p99 ms": _round(self.percentile(99)),
                   "mean ms": _round(self.mean_ms), "requests": self.answered,
                   "failed": self.failed, "clients": s.concurrency, "batch size": s.batch_size,
                   "workers": s.workers}
        head = "".join(f"<th>{html.escape(k)}</th>" for k in figures)
        cells = "".join(f"<td>{html.escape(str(v))}</td>" for v in figures.values())
        plot = html_image(*latency_histogram(self.latencies_ms))
        return (f'<div class="nbserve-bench"><table style="white-space:nowrap"><tr>{head}</tr>'
                f"<tr>{cells}</tr></table><pre>{html.escape(str(self))}</pre>{plot}</div>")


def _round(value):
    return "" if value is None else round(value, 2)


def measure(settings: BenchSettings, url: str, *, body: bytes | None = None,
            key: str | None = None, metrics_url: str | None = None, seconds: float | None = None,
            on_progress: Callable[[int, int], None] | None = None) -> BenchResult:
    """Load ``url`` (the model's inference URL) as ``settings`` say and gather the figures.
    ``body`` is sent (default: the ``input`` file's bytes); ``key`` is the inference key;
    ``metrics_url``: an nbserve metrics API, whose in-server latencies fill Model_p50/p90/p99."""
    body = Path(settings.input).read_bytes() if body is None else body
    latencies, statuses, elapsed, busy = load(
        url, body, content_type=settings.content_type, concurrency=settings.concurrency,
        requests=settings.requests, key=key, seconds=seconds, on_progress=on_progress)
    return BenchResult(settings, latencies, statuses, elapsed, busy,
                       server_latency_ms=server_latencies(metrics_url, url) if metrics_url else {})


def server_latencies(metrics_url: str, url: str) -> dict[str, float]:
    """The in-server latency quantiles nbserve's metrics API shows for the model ``url`` calls."""
    import re
    import urllib.request

    model = urlsplit(url).path.rstrip("/").split("/")[2]
    try:
        with urllib.request.urlopen(metrics_url.rstrip("/") + "/metrics", timeout=10) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    pattern = (r'^nbserve_request_latency_milliseconds\{model_name="' + re.escape(model)
               + r'",[^}]*quantile="([0-9.]+)"\} (\S+)')
    return {q: float(v) for q, v in re.findall(pattern, text, re.M)}


def in_process_limit(version, body: bytes, seconds: float = 2.0) -> float:
    """Requests a second a fresh copy of ``version``'s handler answers in a plain loop on this
    thread, at the version's batch size: the model's own speed, without a server."""
    from nbserve.handlers.context import Context, RequestProcessor
    from nbserve.handlers.loader import archive_imports, load_handler

    with archive_imports(version.model_dir):
        entry = load_handler(version.handler, version.model_dir)
        context = Context(version.name, str(version.model_dir), version.manifest,
                          version.config.batch_size, None, model_yaml_config=version.config.yaml)
        entry.initialize(context)
    rows = [{"body": body}] * version.config.batch_size
    context.request_ids = {i: f"bench-{i}" for i in range(len(rows))}
    context.request_processor = [RequestProcessor({}) for _ in rows]
    entry.handle(rows, context)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        entry.handle(rows, context)
        done += len(rows)
    return done / (time.perf_counter() - started)


# The load, in a process of its own.

def load(url: str, body: bytes, *, content_type: str, concurrency: int, requests: int,
         key: str | None = None, seconds: float | None = None,
         on_progress: Callable[[int, int], None] | None = None
         ) -> tuple[list[float], Counter, float, float]:
    """``requests`` requests to ``url`` from ``concurrency`` closed-loop clients, in a load
    process (stopping early after ``seconds``, if given); ``(latencies_ms, statuses,
    elapsed_s, generator_busy)``. ``on_progress(done, total)`` is called as answers come."""
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(body)
    spec = {"url": url, "body_file": f.name, "content_type": content_type,
            "concurrency": concurrency, "requests": requests, "key": key, "seconds": seconds}
    try:
        process = subprocess.Popen([sys.executable, "-m", "nbserve.benchmark.load", json.dumps(spec)],
                                   stdout=subprocess.PIPE, text=True)
        result = None
        for line in process.stdout:
            kind, _, payload = line.partition(" ")
            if kind == "done" and on_progress is not None:
                on_progress(int(payload), requests)
            elif kind == "result":
                result = json.loads(payload)
        if process.wait() != 0 or result is None:
            raise RuntimeError(f"the load process failed (exit {process.returncode})")
    finally:
        os.unlink(f.name)
    return (result["latencies_ms"], Counter({_status(k): v for k, v in result["statuses"].items()}),
            result["elapsed_s"], result["busy"])


def _status(text: str):
    return int(text) if text.isdigit() else text


def _load_main(spec: dict) -> None:
    """The load process: closed-loop clients, progress lines, then the result line."""
    import http.client

    parts = urlsplit(spec["url"])
    connection_class = (http.client.HTTPSConnection if parts.scheme == "https"
                        else http.client.HTTPConnection)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    body = Path(spec["body_file"]).read_bytes()
    headers = {"Content-Type": spec["content_type"]}
    if spec.get("key"):
        headers["Authorization"] = f"Bearer {spec['key']}"
    total, lock = spec["requests"], threading.Lock()
    until = time.monotonic() + spec["seconds"] if spec.get("seconds") else math.inf
    latencies: list[float] = []
    statuses: Counter = Counter()
    issued = [0]

    def client() -> None:
        connection = None
        while True:
            with lock:
                if issued[0] >= total or time.monotonic() >= until:
                    return
                issued[0] += 1
            if connection is None:
                connection = connection_class(parts.hostname, parts.port, timeout=600)
            started = time.perf_counter()
            try:
                connection.request("POST", path, body, headers)
                response = connection.getresponse()
                response.read()
                status = response.status
                if response.getheader("Connection", "").lower() == "close":
                    connection.close()
                    connection = None
            except OSError as error:
                status = type(error).__name__
                connection.close()
                connection = None
            with lock:
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[status] += 1

    started, cpu = time.monotonic(), time.process_time()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(spec["concurrency"])]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        time.sleep(0.2)
        print(f"done {len(latencies)}", flush=True)
    elapsed = time.monotonic() - started
    busy = (time.process_time() - cpu) / elapsed if elapsed else 0.0
    print("result " + json.dumps({"latencies_ms": latencies, "elapsed_s": elapsed, "busy": busy,
                                  "statuses": {str(k): v for k, v in statuses.items()}}),
          flush=True)


if __name__ == "__main__":
    _load_main(json.loads(sys.argv[1]))
