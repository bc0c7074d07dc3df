"""How long a worker waits for a batch to fill: only while more requests are on their way.

TorchServe's ``max_batch_delay`` is fixed: 0 runs whatever is waiting, so under load batches
split (1 + 3, 2 + 2) whenever a returning client just misses one; a fixed delay mends that but
adds itself to every lone request. A :class:`BatchPolicy` (one per model version and worker
process) instead keeps two figures it measures:

- **demand**: the most requests recently in hand at once (the largest ``ready`` count of the
  last second). Clients that send again as soon as they are answered come back together, so a
  batch that starts with fewer than that is missing requests already on their way;
- **what a batch of one costs**, from the worker's own timing of its batches.

Its **target** is the demand (at most ``batch_size``), and a batch with fewer ready than the
target **waits** for the rest, never longer than a batch of one costs (longer cannot pay: the
worker could have run it) nor than a ``max_batch_delay`` the user set, which is the ceiling. The
wait usually ends within a millisecond or two, when the batch is full. One caller at a time
makes a demand of 1: a lone request never waits. Demand forgets within a second, so batches
shrink back when load falls, and grow as soon as more requests are in hand.

The :mod:`~nbserve.serving.tuner` picks the threads a batch runs on; this policy only reads the times
the worker measures under whatever the tuner chose, so the two never pull against each other.
"""

from __future__ import annotations

import math
import threading
import time

#: Seconds over which demand and batch costs forget the past.
MEMORY_S = 0.5


class BatchPolicy:
    """The batch target and wait for one model version's worker(s); thread-safe."""

    def __init__(self, batch_size: int, max_batch_delay_ms: float = 0):
        self.batch_size = batch_size
        #: The user's max_batch_delay, in seconds: a ceiling on the wait; 0 leaves it to the
        #: policy (TorchServe's 0 means "do not wait", which the policy does at low load).
        self.ceiling = max_batch_delay_ms / 1000 if max_batch_delay_ms else None
        self._lock = threading.Lock()
        # Demand: the largest ready count in this window of MEMORY_S and in the one before.
        self._window_start = -math.inf
        self._demand_now = self._demand_before = 0
        self._cost: dict[int, float] = {}  # seconds per batch, by size
        self._updated: dict[int, float] = {}
        #: The latest decision, for status and metrics.
        self.target = 1
        self.wait_s = 0.0

    def ran(self, size: int, seconds: float) -> None:
        """A batch of ``size`` took ``seconds`` (forward pass and postprocess)."""
        now = time.monotonic()
        with self._lock:
            old = self._cost.get(size)
            since = now - self._updated.get(size, now)
            self._cost[size] = seconds if old is None else _blend(old, seconds, max(since, seconds))
            self._updated[size] = now

    def decide(self, ready: int, now: float | None = None) -> tuple[int, float]:
        """``(target, wait)``: with ``ready`` requests in hand, fill to ``target``, waiting up
        to ``wait`` seconds for the rest."""
        now = time.monotonic() if now is None else now
        with self._lock:
            demand = self._demand(ready, now)
            one = self._cost_of(1)
            target = max(1, min(self.batch_size, demand))
            wait = 0.0
            if ready < target and one is not None:
                wait = one if self.ceiling is None else min(one, self.ceiling)
            self.target, self.wait_s = target, wait
            return target, wait

    def _demand(self, ready: int, now: float) -> int:
        """The most requests in hand at once over the last one to two windows, ``ready``
        included."""
        if now - self._window_start >= MEMORY_S:
            elapsed_windows = (now - self._window_start) // MEMORY_S
            self._demand_before = self._demand_now if elapsed_windows == 1 else 0
            self._demand_now = 0
            self._window_start = now
        self._demand_now = max(self._demand_now, ready)
        return max(self._demand_now, self._demand_before)

    def _cost_of(self, size: int) -> float | None:
        """A batch of ``size``'s time: measured, or scaled from the nearest measured size."""
        if size in self._cost:
            return self._cost[size]
        if not self._cost:
            return None
        nearest = min(self._cost, key=lambda s: abs(s - size))
        return self._cost[nearest] * size / nearest


def _blend(old: float, new: float, elapsed: float) -> float:
    """An exponentially weighted average that forgets over ``MEMORY_S`` of elapsed time."""
    weight = 1 - math.exp(-elapsed / MEMORY_S)
    return old + weight * (new - old)
