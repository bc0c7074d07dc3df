"""How many torch intra-op threads a worker's forward pass uses, chosen by measurement.

OpenMP throttles its threads' spinning once a process has more of them than cores, which makes
small models' forward passes several times slower; how many threads pay off also depends on the
model and the load, so each worker measures its first batches of each size range at one thread
and at every core, and keeps the faster.
"""

from __future__ import annotations

import os
import statistics
import time

import torch


class Tuner:
    """Chooses a worker's torch intra-op threads by measurement, per range of batch sizes.

    For each range (1, 2-3, 4-7, 8-15, ...), batches alternate between one thread and every
    core until each count has ``trials`` timings (after a warm-up each); the lower median time
    per request wins. Per range, because the answer changes with load: a lone request runs
    fastest on every core, while under load the other threads (preprocessing, HTTP) need a
    core and one thread wins.
    """

    def __init__(self, enabled: bool = True, trials: int = 4, on_batch=None):
        cores = os.cpu_count() or 1
        self.candidates = [cores, 1] if enabled and cores > 1 else []
        self.trials = trials
        self._samples: dict[int, dict[int, list[float]]] = {}
        self._chosen: dict[int, int] = {}
        #: The thread count of the latest batch.
        self.threads = torch.get_num_threads()
        #: Given ``(items, seconds)`` of every batch timed: the batching policy's figures.
        self.on_batch = on_batch

    def timing(self, items: int):
        return _Timing(self, items)

    def _threads_for(self, items: int) -> int:
        if not self.candidates:
            return self.threads
        size_range = items.bit_length()
        if size_range in self._chosen:
            return self._chosen[size_range]
        samples = self._samples.setdefault(size_range, {c: [] for c in self.candidates})
        return min(self.candidates, key=lambda c: len(samples[c]))

    def _record(self, threads: int, seconds: float, items: int) -> None:
        size_range = items.bit_length()
        if not self.candidates or size_range in self._chosen:
            return
        samples = self._samples[size_range]
        samples[threads].append(seconds / items)
        if all(len(v) > self.trials for v in samples.values()):
            self._chosen[size_range] = min(
                self.candidates, key=lambda c: statistics.median(samples[c][1:]))


class _Timing:
    def __init__(self, tuner: Tuner, items: int):
        self.tuner, self.items = tuner, items

    def __enter__(self):
        self.threads = self.tuner._threads_for(self.items)
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        self.tuner.threads = self.threads
        self.started = time.perf_counter()

    def __exit__(self, *exc):
        if exc[0] is None:
            seconds = time.perf_counter() - self.started
            self.tuner._record(self.threads, seconds, self.items)
            if self.tuner.on_batch is not None:
                self.tuner.on_batch(self.items, seconds)
