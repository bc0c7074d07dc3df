"""One version of a model as it is served: its archive and settings, the queue its requests wait
in, the batching policy, its figures, and the workers that run its handler.

The workers reach back to it only through :class:`~nbserve.serving.host.WorkerHost`, which a
worker process's own small host (:mod:`nbserve.serving.process.child`) provides too.
"""

from __future__ import annotations

import itertools
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nbserve.errors import NBServeError, QueueFull
from nbserve.handlers.metrics import HandlerMetrics
from nbserve.logs import model_metric, server_metric, server_metrics_logged
from nbserve.serving import model_config
from nbserve.serving.batch_policy import BatchPolicy
from nbserve.serving.host import version_label
from nbserve.serving.process.supervisor import ProcessWorker
from nbserve.serving.queue import Prediction, Request, RequestQueue
from nbserve.serving.sequences import Sequences
from nbserve.serving.stats import VersionStats
from nbserve.serving.worker import Worker
from nbserve.store.archive import ModelArchive


class ModelVersion:
    """One version of a model: its files, settings, queue, workers and figures."""

    def __init__(self, archive: ModelArchive, name: str, version: str, handler: Any,
                 config: model_config.ModelConfig, metrics_config: str | None = None,
                 metrics_auto_detect: bool = False):
        self.archive = archive
        self.name = name
        self.version = version
        self.handler = handler
        self.config = config
        self.label = version_label(name, version)
        #: How long its batches wait to fill (see nbserve.serving.batch_policy).
        self.batching = BatchPolicy(config.batch_size, config.max_batch_delay)
        self.queue = RequestQueue(config.job_queue_size, self.label)
        #: A stateful model's live sequences, which feed its queue (TorchServe's sequence
        #: batching); None for every other model.
        self.sequences = Sequences(name, config, self.queue, lambda: [w.id for w in self.workers]) \
            if config.sequences else None
        self.stats = VersionStats()
        #: Where its requirements.txt was installed, if it was.
        self.requirements: Path | None = None
        #: The metrics its handler adds; ``metrics_config`` declares some in advance.
        self.handler_metrics = HandlerMetrics(name, metrics_config, on_update=model_metric,
                                              auto_detect=metrics_auto_detect)
        self.workers: list[Worker | ProcessWorker] = []
        #: What the user should know of how it is served (one line each), for %serve to show.
        self.notices: list[str] = []
        self.loaded_at = datetime.now(timezone.utc)
        self._worker_ids = itertools.count(9000)
        self._scale_lock = threading.Lock()

    @property
    def model_dir(self) -> Path:
        return self.archive.path

    @property
    def manifest(self) -> dict:
        return self.archive.manifest

    def scale(self, count: int, wait: bool = True) -> None:
        """Run ``count`` workers: new ones load before this returns; surplus ones finish their
        batch in hand and stop (before this returns if ``wait``)."""
        with self._scale_lock:
            gpu_ids = self.config.gpu_ids
            kind = ProcessWorker if self.config.isolation == "process" else Worker
            while len(self.workers) < count:
                index = len(self.workers)
                gpu_id = gpu_ids[index % len(gpu_ids)] if gpu_ids else None
                worker = kind(next(self._worker_ids), self, gpu_id)
                self.workers.append(worker)  # listed while it loads, as TorchServe lists it
                try:
                    worker.start()
                except BaseException:
                    self.workers.remove(worker)
                    raise
            surplus = self.workers[count:]
            self.workers = self.workers[:count]
        for worker in surplus:
            worker.stop()
        if surplus and self.sequences is not None:
            self.sequences.unpin({worker.id for worker in surplus})
        if wait:
            for worker in surplus:
                worker.join()

    def admit(self, request: Request) -> None:
        """Queue a request (behind its sequence's earlier ones, for a stateful model); raises
        QueueFull when it cannot wait."""
        if self.sequences is None:
            self.queue.put(request)
        else:
            self.sequences.submit(request)

    def answer(self, request: Request, prediction: Prediction) -> None:
        """Answer ``request`` and count it, unless it was settled already (timed out, say).
        Counted first: a client that reads the metrics logs once answered finds its lines."""
        if not request.settled:
            self._record(request)
            request.resolve(prediction)

    def fail(self, request: Request, error: NBServeError) -> None:
        """Fail ``request`` and count its status, unless it was settled already."""
        if not request.settled:
            self._record(request, str(error.status))
            request.fail(error)

    def _record(self, request: Request, error_type: str | None = None) -> None:
        finished = time.monotonic()
        started = request.received if request.started is None else request.started
        self.stats.record_answer(request.received, started, finished, error_type)
        if not server_metrics_logged():  # a kernel's, say: nothing more on the answer's path
            return
        # TorchServe's per-request lines in ts_metrics.log (metrics_mode=log).
        labels = {"model_name": self.name, "model_version": self.version}
        server_metric("ts_inference_requests_total", "count", 1, labels, counter=True)
        server_metric("ts_inference_latency_microseconds", "us",
                      round((finished - started) * 1e6, 3), labels, counter=True)
        server_metric("ts_queue_latency_microseconds", "us",
                      round((started - request.received) * 1e6, 3), labels, counter=True)
        server_metric("QueueTime", "ms", round((started - request.received) * 1000, 3),
                      {"Level": "Host"})

    def close(self, wait: bool = True) -> None:
        """Take no new requests, answer every queued one, then stop the workers."""
        self.queue.close()
        if not self.workers:
            self.queue.fail_all(QueueFull(f"{self.label} was unloaded before it had a worker."))
        if wait:
            self.join()

    def join(self) -> None:
        for worker in self.workers:
            worker.join()
