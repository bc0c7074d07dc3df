"""What a model version has done: counts, latencies and batch sizes, for metrics and status."""

from __future__ import annotations

import math
import threading
from collections import Counter, deque
from typing import Iterable

#: Latencies kept for percentiles: enough for a stable p99, bounded in memory.
WINDOW = 2048


def nearest_rank(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of ``values`` by the nearest-rank method: the smallest
    value with at least ``q`` percent of them at or below it; None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(0, min(len(ordered), math.ceil(q / 100 * len(ordered))) - 1)]


class VersionStats:
    """Thread-safe running figures for one model version."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests = 0
        self.errors: Counter[str] = Counter()
        self.batch_sizes: Counter[int] = Counter()
        #: Microsecond totals, as TorchServe's counters report them.
        self.inference_latency_us = 0.0
        self.queue_latency_us = 0.0
        self._latencies_ms: deque[float] = deque(maxlen=WINDOW)
        #: Worker processes that died and were started again.
        self.worker_restarts = 0

    def record_batch(self, size: int) -> None:
        with self._lock:
            self.batch_sizes[size] += 1

    def record_restart(self) -> None:
        with self._lock:
            self.worker_restarts += 1

    def record_answer(self, received: float, started: float | None, finished: float,
                      error_type: str | None = None) -> None:
        started = received if started is None else started
        with self._lock:
            self.requests += 1
            if error_type:
                self.errors[error_type] += 1
            self.queue_latency_us += (started - received) * 1e6
            self.inference_latency_us += (finished - started) * 1e6
            self._latencies_ms.append((finished - received) * 1000)

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (0-100) of recent end-to-end latencies, in milliseconds."""
        with self._lock:
            values = list(self._latencies_ms)
        return nearest_rank(values, q)
