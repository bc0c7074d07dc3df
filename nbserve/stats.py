"""What a model version has done: counts, latencies and batch sizes, for metrics and status."""

from __future__ import annotations

import threading
from collections import Counter, deque

#: Latencies kept for percentiles: enough for a stable p99, bounded in memory.
_WINDOW = 2048


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
        self._latencies_ms: deque[float] = deque(maxlen=_WINDOW)
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
            values = sorted(self._latencies_ms)
        if not values:
            return None
        return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]
