"""A step load against ``nbserve serve``: 1 client, then 16, then 1, with the batching policy's
target and wait read from ``/metrics`` every 100 ms.

Prints a trace (one row a second: requests answered, p99 latency, failures, the policy's target
and wait) and how long the policy took to follow each step.

    python bench/step.py                              # mobilenet_v3_small, 10 s a step
    python bench/step.py --model densenet161 --seconds 15
"""

from __future__ import annotations

import argparse
import http.client
import re
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import models  # noqa: E402
from rest import NBServe  # noqa: E402


class Clients:
    """Closed-loop clients whose number changes while they run; each answer is recorded."""

    def __init__(self, server, path: str, body: bytes):
        self.server, self.path, self.body = server, path, body
        self.answers: list[tuple[float, float, int]] = []  # (answered at, seconds, status)
        self._running: list[threading.Event] = []

    def set(self, count: int) -> None:
        while len(self._running) > count:
            self._running.pop().set()
        while len(self._running) < count:
            stop = threading.Event()
            threading.Thread(target=self._run, args=(stop,), daemon=True).start()
            self._running.append(stop)

    def _run(self, stop: threading.Event) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=300)
        headers = {"Authorization": f"Bearer {self.server.key}"}
        while not stop.is_set():
            started = time.monotonic()
            connection.request("PUT", self.path, self.body, headers)
            response = connection.getresponse()
            response.read()
            self.answers.append((time.monotonic(), time.monotonic() - started, response.status))


def policy(metrics_port: int) -> tuple[int, float]:
    """The first worker's batch target and wait (ms), from the metrics API."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    target = re.search(r"^nbserve_batch_target\{[^}]*\} (\S+)", text, re.M)
    wait = re.search(r"^nbserve_batch_wait_milliseconds\{[^}]*\} (\S+)", text, re.M)
    return int(float(target.group(1))), float(wait.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v3_small")
    parser.add_argument("--seconds", type=float, default=10, help="Seconds a step.")
    parser.add_argument("--steps", default="1,16,1")
    args = parser.parse_args()
    mar = models.build(args.model)
    steps = [int(s) for s in args.steps.split(",")]
    with NBServe(mar) as server:
        clients = Clients(server, f"/predictions/{mar.stem}", models.photo())
        clients.set(1)
        time.sleep(3)  # warm: the tuner's first batches
        clients.answers.clear()
        start, trace, changes = time.monotonic(), [], []
        for count in steps:
            clients.set(count)
            changes.append((time.monotonic() - start, count))
            until = time.monotonic() + args.seconds
            while time.monotonic() < until:
                trace.append((time.monotonic() - start, *policy(server.metrics_port)))
                time.sleep(0.1)
        clients.set(0)
    print(f"Step load on {args.model}: clients {args.steps}, {args.seconds:g} s a step.\n")
    print("| second | clients | answered | p99 (ms) | failed | target | wait (ms) |")
    print("|---|---|---|---|---|---|---|")
    for second in range(int(len(steps) * args.seconds)):
        answers = [a for a in clients.answers if second <= a[0] - start < second + 1]
        latencies = sorted(a[1] for a in answers)
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000 if latencies else 0
        sampled = [t for t in trace if second <= t[0] < second + 1]
        count = next(c for at, c in reversed(changes) if at <= second + 0.5)
        print(f"| {second} | {count} | {len(answers)} | {p99:.0f} "
              f"| {sum(a[2] != 200 for a in answers)} | {max(t[1] for t in sampled)} "
              f"| {max(t[2] for t in sampled):.1f} |")
    for (at, count), (previous_at, previous) in zip(changes[1:], changes):
        target = min(count, 4) if count > 1 else 1
        followed = next((t[0] - at for t in trace if t[0] >= at and t[1] == target
                         and (count > 1 or t[2] == 0)), None)
        print(f"\n{previous} -> {count} clients: target {target} after "
              + (f"{followed:.1f} s" if followed is not None else "never"))
    worst = max(a[1] for a in clients.answers)
    print(f"\nSlowest answer {worst * 1000:.0f} ms; failed: "
          f"{sum(a[2] != 200 for a in clients.answers)} of {len(clients.answers)}.")


if __name__ == "__main__":
    main()
