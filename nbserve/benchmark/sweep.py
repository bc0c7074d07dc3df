"""A sweep over batch sizes, workers and clients within a time budget, and the setting it
recommends for a p99 target (``%bench --sweep``)."""

from __future__ import annotations

import html
import math
import time
from dataclasses import dataclass
from typing import Callable

from nbserve.benchmark.load import BenchResult
from nbserve.benchmark.plots import html_image, throughput_against_p99


@dataclass
class Sweep:
    """Throughput and p99 of each setting tried, and the one recommended for a p99 target."""

    results: dict[tuple[int, int, int], BenchResult]  # (batch size, workers, clients) -> result
    p99_ms: float | None
    #: How to serve the recommended setting: a %serve line and model-config.yaml lines.
    serve_line: str = ""

    @property
    def recommended(self) -> tuple[int, int, int] | None:
        """The fastest setting whose p99 meets the target (the lowest p99 if none does)."""
        if not self.results:
            return None
        meeting = {k: r for k, r in self.results.items()
                   if self.p99_ms is None or (r.percentile(99) or math.inf) <= self.p99_ms}
        if meeting:
            return max(meeting, key=lambda k: meeting[k].throughput)
        return min(self.results, key=lambda k: self.results[k].percentile(99) or math.inf)

    def config_lines(self) -> str:
        batch, workers, _ = self.recommended
        return f"batchSize: {batch}\nminWorkers: {workers}\nmaxWorkers: {workers}"

    def __str__(self) -> str:
        lines = ["batch  workers  clients  req/s    p99 ms  failed"]
        for (batch, workers, clients), result in sorted(self.results.items()):
            lines.append(f"{batch:>5}  {workers:>7}  {clients:>7}  {result.throughput:>7.1f}  "
                         f"{result.percentile(99) or 0:>6.1f}  {result.failed:>6}")
        if self.recommended:
            batch, workers, clients = self.recommended
            target = f"p99 <= {self.p99_ms:g} ms" if self.p99_ms else "the most throughput"
            met = self.p99_ms is None or (self.results[self.recommended].percentile(99)
                                          or math.inf) <= self.p99_ms
            lines += ["", f"Recommended for {target}: batch size {batch}, {workers} worker"
                      f"{'s' * (workers != 1)}" + ("" if met else " (no setting met the target: "
                                                   "this one has the lowest p99)"),
                      self.serve_line, "model-config.yaml:", self.config_lines()]
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        points = [(r.percentile(99) or 0, r.throughput, f"b{b} w{w} c{c}")
                  for (b, w, c), r in sorted(self.results.items())]
        plot = html_image(*throughput_against_p99(points, self.p99_ms))
        return f'<div class="nbserve-sweep">{plot}<pre>{html.escape(str(self))}</pre></div>'


def sweep(apply: Callable[[int, int], None], run: Callable[[int, float], BenchResult], *,
          batch_sizes: list[int], workers: list[int], concurrencies: list[int],
          budget_s: float, p99_ms: float | None) -> Sweep:
    """Try each (batch size, workers, clients) within ``budget_s``: ``apply(batch, workers)``
    serves the model so, ``run(clients, seconds)`` measures it."""
    settings = [(b, w, c) for b in batch_sizes for w in workers for c in concurrencies]
    results: dict[tuple[int, int, int], BenchResult] = {}
    deadline = time.monotonic() + budget_s
    for index, (batch, worker_count, clients) in enumerate(settings):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if index == 0 or settings[index - 1][:2] != (batch, worker_count):
            apply(batch, worker_count)
        share = (deadline - time.monotonic()) / (len(settings) - index)
        results[batch, worker_count, clients] = run(clients, max(share, 0.5))
    return Sweep(results, p99_ms)
