"""A worker: one loaded copy of a model's handler, fed batches from its version's queue.

The worker owns the threads and the device. What an answer is (TorchServe's batch contract)
is the :class:`~nbserve.serving.service.HandlerService`'s; how requests reach the handler,
whole batches or a preprocessing pipeline, is a loop's (:mod:`nbserve.serving.loops`).

The model loads on the worker's own thread, and only that thread runs torch with several
intra-op threads (the pipeline's preprocessing threads use one each); how many,
:mod:`nbserve.serving.tuner` measures. On a GPU, batches are gathered in pinned memory and
copied without blocking on the worker's own CUDA stream, and a batch that runs out of GPU memory
is split in halves until what fails is the one request that does not fit.

Either way, a request that fails takes no neighbour down with it: when a batch fails, each of
its requests is run again on its own, so only the bad one gets the error.
"""

from __future__ import annotations

import os
import threading
from datetime import datetime, timezone

import torch

from nbserve.handlers.context import Context
from nbserve.handlers.loader import archive_imports, load_handler
from nbserve.serving.host import WorkerHost
from nbserve.serving.loops import ContinuousLoop, HandleLoop, PipelineLoop, loop_for
from nbserve.serving.service import HandlerService
from nbserve.serving.tuner import Tuner
from nbserve.store.live import LiveModel


class Worker:
    """Loads the handler on :meth:`start`, then serves until :meth:`stop` or its queue closes."""

    #: A thread is never restarted (:class:`~nbserve.serving.process.supervisor.ProcessWorker`s are).
    restarts = 0
    last_death: str | None = None
    #: Bytes of GPU memory the handler took as it loaded (its weights); None on a CPU.
    gpu_memory: int | None = None

    def __init__(self, worker_id: int, version: WorkerHost, gpu_id: int | None):
        self.id = worker_id
        self.version = version
        self.gpu_id = gpu_id
        self.status = "UNLOADED"
        self.start_time: datetime | None = None
        #: Once loaded: the handler's service, the loop that feeds it, and the threads tuner.
        self.service: HandlerService | None = None
        self.loop: HandleLoop | ContinuousLoop | PipelineLoop | None = None
        self.tuner: Tuner | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def pid(self) -> int:
        return os.getpid()

    @property
    def entry(self):
        """The loaded handler, as :func:`~nbserve.handlers.loader.load_handler` returns it."""
        return self.service.entry

    @property
    def batch_target(self) -> int:
        """The batching policy's latest target (see nbserve.serving.batch_policy)."""
        return self.version.batching.target

    @property
    def batch_wait_s(self) -> float:
        return self.version.batching.wait_s

    def start(self) -> None:
        """Load the handler on the worker's thread and start serving; load errors propagate."""
        self.status = "LOADING"
        self._loaded = threading.Event()
        self._load_error: BaseException | None = None
        name = f"nbserve-{self.version.name}-{self.version.version}-w{self.id}"
        thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._threads = [thread]
        thread.start()
        self._loaded.wait()
        if self._load_error is not None:
            thread.join()
            self.status = "STOPPED"
            raise self._load_error

    def _serve(self) -> None:
        version = self.version
        on_gpu = self.gpu_id is not None and torch.cuda.is_available()
        before = torch.cuda.memory_allocated(self.gpu_id) if on_gpu else 0
        try:
            model_dir = version.archive.path
            with archive_imports(model_dir):
                entry = load_handler(version.handler, model_dir)
                context = Context(
                    version.name, str(model_dir), version.archive.manifest,
                    version.config.batch_size, self.gpu_id,
                    limit_max_image_pixels=version.config.limit_max_image_pixels,
                    metrics=version.handler_metrics, model_yaml_config=version.config.yaml,
                    live_module=version.archive.module if isinstance(version.archive, LiveModel)
                    else None,
                )
                entry.initialize(context)
        except BaseException as error:  # noqa: BLE001 - handed to start()'s caller
            self._load_error = error
            self._loaded.set()
            return
        if on_gpu:
            self.gpu_memory = torch.cuda.memory_allocated(self.gpu_id) - before
        self.service = service = HandlerService(version, entry, context, self.id)
        if service.cuda and getattr(service.handler, "fixed_size_inputs", False):
            torch.backends.cudnn.benchmark = True  # one input shape: let cuDNN pick its kernels
        self.loop = loop = loop_for(service.handler, version.config)(version, service, self._stop)
        self._threads += loop.threads
        # One measurement of each batch: the tuner's, which the batching policy reads too.
        self.tuner = Tuner(enabled=self.gpu_id is None, on_batch=version.batching.ran)
        self.start_time = datetime.now(timezone.utc)
        self.status = "READY"
        self._loaded.set()
        loop.run(self.tuner)
        loop.close()
        service.close()

    def stop(self) -> None:
        """Finish the requests in hand, take no more."""
        self._stop.set()
        self.version.queue.wake()

    def join(self, timeout: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout)
        self.status = "STOPPED"
