"""The engine against the in-process limit, on densenet161 and a small model, CPU.

The in-process limit is the handler's preprocess + forward + postprocess in a plain loop on
the main thread, at its best batch size; the forward limit leaves preprocessing out (what a
server with enough preprocessing threads could reach). The engine is driven by 1, 4 and 16 closed-loop
callers of ``engine.predict``. Each measurement runs in a fresh process, so one cannot warm or
slow another.

    python bench/engine.py                 # both models, 10 s a point
    python bench/engine.py --seconds 5 --models mobilenet_v3_small
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import models  # noqa: E402

BATCH_SIZES = (1, 2, 4, 8)
CALLERS = (1, 4, 16)


def measure_limit(name: str, seconds: float, device: str = "cpu",
                  batch_sizes: tuple[int, ...] = BATCH_SIZES) -> dict:
    """The handler in a plain loop: images per second per batch size, and batch-1 latency.
    On ``device="cuda"``, on GPU 0 (the answers' ``.tolist()`` waits for each batch)."""
    from nbserve.handlers.context import Context
    from nbserve.handlers.loader import load_handler
    from nbserve.store.archive import open_archive

    opened = open_archive(models.build(name))
    entry = load_handler("image_classifier", opened.path)
    entry.initialize(Context(name, str(opened.path), opened.manifest, 1,
                             0 if device == "cuda" else None))
    handler, image = entry.instance, models.photo()
    throughput, forward, latency_ms = {}, {}, None
    for batch_size in batch_sizes:
        rows = [{"body": image}] * batch_size
        whole = lambda: handler.postprocess(handler.inference(handler.preprocess(rows)))  # noqa: E731
        throughput[batch_size] = batch_size / _median_time(whole, seconds / len(batch_sizes) / 2)
        if batch_size == 1:
            latency_ms = batch_size / throughput[batch_size] * 1000
        ready = handler.preprocess(rows)
        forward[batch_size] = batch_size / _median_time(
            lambda: handler.postprocess(handler.inference(ready)), seconds / len(batch_sizes) / 2)
    best = max(throughput, key=throughput.get)
    return {"limit": throughput[best], "best_batch": best, "batch1_ms": latency_ms,
            "by_batch": throughput, "forward_limit": max(forward.values()),
            "forward_best_batch": max(forward, key=forward.get), "forward_by_batch": forward}


def _median_time(run, seconds: float) -> float:
    """The median seconds ``run()`` takes, over ``seconds`` (three runs at least)."""
    run()
    times = []
    until = time.monotonic() + seconds
    while time.monotonic() < until or len(times) < 3:
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def closed_loop(call, clients: int, seconds: float) -> tuple[list[float], float, int]:
    """``call()`` from ``clients`` threads, each calling again as soon as it is answered: a
    warm-up (the worker's tuner settles), then ``seconds`` measured. ``call`` returns False for
    a failed request. Returns the measured latencies, the elapsed time and the failures."""
    latencies: list[float] = []
    failures = [0]
    stop_at = [0.0]

    def client():
        while time.monotonic() < stop_at[0]:
            started = time.perf_counter()
            if call() is False:
                failures[0] += 1
            else:
                latencies.append(time.perf_counter() - started)

    for phase in (max(3.0, seconds / 3), seconds):
        latencies.clear()
        failures[0] = 0
        stop_at[0] = time.monotonic() + phase
        threads = [threading.Thread(target=client) for _ in range(clients)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
    return latencies, elapsed, failures[0]


def measure_engine(name: str, seconds: float, callers: int) -> dict:
    """``engine.predict`` from ``callers`` threads in a closed loop."""
    from nbserve.serving.engine import Engine

    image = models.photo()
    with Engine() as engine:
        version = engine.register(models.build(name))
        latencies, elapsed, _ = closed_loop(lambda: engine.predict(name, image), callers, seconds)
        return {"throughput": len(latencies) / elapsed,
                "p50_ms": statistics.median(latencies) * 1000,
                "threads": version.workers[0].tuner.threads}


def in_subprocess(*args: str) -> dict:
    result = subprocess.run([sys.executable, __file__, "--one", *args], capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(models.MODELS))
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)),
                        help=argparse.SUPPRESS)
    parser.add_argument("--one", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, name, *rest = args.one
        sizes = tuple(int(b) for b in args.batch_sizes.split(","))
        result = (measure_limit(name, args.seconds, args.device, sizes) if kind == "limit"
                  else measure_engine(name, args.seconds, int(rest[0])))
        print(json.dumps(result))
        return

    print("| model | in-process limit (img/s, best batch) | in-process batch-1 (ms) "
          "| callers | engine (req/s) | of limit | p50 (ms) | threads chosen |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        models.build(name)
        limit = in_subprocess("limit", name, "--seconds", str(args.seconds))
        for callers in CALLERS:
            run = in_subprocess("engine", name, str(callers), "--seconds", str(args.seconds))
            print(f"| {name} | {limit['limit']:.1f} (batch {limit['best_batch']}) "
                  f"| {limit['batch1_ms']:.1f} | {callers} | {run['throughput']:.1f} "
                  f"| {run['throughput'] / limit['limit']:.2f} | {run['p50_ms']:.1f} "
                  f"| {run['threads']} |", flush=True)


if __name__ == "__main__":
    main()
