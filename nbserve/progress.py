"""Progress of a long step (writing an archive, a benchmark's requests), drawn by tqdm: a widget
in a notebook, a line on a terminal."""

from __future__ import annotations

from tqdm.auto import tqdm

#: Archives smaller than this are written too fast for a bar to help.
ARCHIVE_THRESHOLD = 64 * 2**20


class Progress:
    """A ``progress(done, total)`` callback, as :func:`nbserve.archive` and the benchmark call
    it; no bar until ``total`` reaches ``threshold``. ``unit`` "B" counts bytes in MiB."""

    def __init__(self, label: str, *, unit: str = "B", threshold: int = 0, tqdm_class=tqdm,
                 **options):
        self.label, self.unit, self.threshold = label, unit, threshold
        self._tqdm, self._options = tqdm_class, options
        self.bar = None

    @classmethod
    def archive(cls, label: str, **options) -> Progress:
        return cls(label, unit="B", threshold=ARCHIVE_THRESHOLD, **options)

    @classmethod
    def requests(cls, label: str, **options) -> Progress:
        return cls(label, unit="requests", **options)

    @property
    def shown(self) -> bool:
        return self.bar is not None

    def __call__(self, done: int, total: int) -> None:
        if total < self.threshold:
            return
        if self.bar is None:
            in_bytes = self.unit == "B"
            self.bar = self._tqdm(total=total, desc=self.label, unit=self.unit,
                                  unit_scale=in_bytes, unit_divisor=1024 if in_bytes else 1000,
                                  **self._options)
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
