"""A worker: one loaded copy of a model's handler, fed batches from its version's queue.

A handler whose ``preprocess`` is declared per request (:func:`~nbserve.handlers.base.per_request`:
the default handlers', and subclasses that change only ``inference`` or ``postprocess``) runs
as a pipeline: a pool of threads preprocesses each request as it arrives (decoding images;
Pillow and torch release the GIL, so the pool scales with the cores) while the worker's thread
runs ``inference`` and ``postprocess`` on a batch of whatever is ready, in arrival order. Any
other handler runs ``handle`` on whole batches, one thread: a ``preprocess`` written for the
whole batch (padding to the longest text, say) is never split.

The model loads on the worker's own thread, and only that thread runs torch with several
intra-op threads (the pool's use one each); how many, :mod:`nbserve.serving.tuner` measures. On a GPU,
batches are gathered in pinned memory and copied without blocking on the worker's own CUDA
stream, and a batch that runs out of GPU memory is split in halves until what fails is the one
request that does not fit.

Either way, a request that fails takes no neighbour down with it: when a batch fails, each of
its requests is run again on its own, so only the bad one gets the error.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import os
import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from typing import Any

import torch

from nbserve.errors import InferenceError
from nbserve.handlers.base import BaseHandler, asks_for_handle, declared_per_request
from nbserve.handlers.context import Context, RequestProcessor
from nbserve.handlers.loader import archive_imports, load_handler
from nbserve.logs import MODEL_LOG
from nbserve.serving.host import WorkerHost
from nbserve.serving.queue import Prediction, ReadyBuffer, Request, Stage
from nbserve.serving.tuner import Tuner
from nbserve.store.live import LiveModel

#: Stands for "run this request through ``handle``" in the pipeline (explain/describe).
_RUN_HANDLE = object()


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
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        #: Where an ``async def handle`` runs (TorchServe's asyncCommunication handlers): one
        #: loop for the worker's life, so what the handler binds to it stays usable.
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def pid(self) -> int:
        return os.getpid()

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
            with archive_imports(version.model_dir):
                self.entry = load_handler(version.handler, version.model_dir)
                self.context = Context(
                    version.name, str(version.model_dir), version.manifest,
                    version.config.batch_size, self.gpu_id,
                    limit_max_image_pixels=version.config.limit_max_image_pixels,
                    metrics=version.handler_metrics, model_yaml_config=version.config.yaml,
                    live_module=version.archive.module if isinstance(version.archive, LiveModel)
                    else None,
                )
                self.entry.initialize(self.context)
        except BaseException as error:  # noqa: BLE001 - handed to start()'s caller
            self._load_error = error
            self._loaded.set()
            return
        if on_gpu:
            self.gpu_memory = torch.cuda.memory_allocated(self.gpu_id) - before
        handler = self.entry.instance
        pipelined = _pipelines(handler)
        config = version.config
        self.device = getattr(handler, "device", None)
        cuda = self.device is not None and self.device.type == "cuda"
        self._stream = torch.cuda.Stream(self.device) if cuda else None
        if cuda and getattr(handler, "fixed_size_inputs", False):
            torch.backends.cudnn.benchmark = True  # one input shape: let cuDNN pick its kernels
        if pipelined:
            self._ready = ReadyBuffer(capacity=2 * config.batch_size)
            self.pool = ThreadPoolExecutor(
                preprocess_threads(config, version.config.min_workers, on_gpu=cuda),
                thread_name_prefix=f"{threading.current_thread().name}-pre",
                initializer=torch.set_num_threads, initargs=(1,))
            dispatch = threading.Thread(target=self._dispatch_loop,
                                        name=f"{threading.current_thread().name}-dispatch",
                                        daemon=True)
            self._threads.append(dispatch)
            dispatch.start()
        # One measurement of each batch: the tuner's, which the batching policy reads too.
        self.tuner = tuner = Tuner(enabled=self.gpu_id is None, on_batch=version.batching.ran)
        self.start_time = datetime.now(timezone.utc)
        self.status = "READY"
        self._loaded.set()
        if pipelined:
            self._inference_loop(tuner)
            self.pool.shutdown()
        else:
            self._handle_loop(tuner)
        if self._loop is not None:
            self._loop.close()

    def stop(self) -> None:
        """Finish the requests in hand, take no more."""
        self._stop.set()
        self.version.queue.wake()

    def join(self, timeout: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout)
        self.status = "STOPPED"

    # The single-thread loop, for handlers with their own ``handle``.

    def _handle_loop(self, tuner: Tuner) -> None:
        config = self.version.config
        while (batch := self.version.queue.take_batch(
                config.batch_size, self._stop, self.version.batching)) is not None:
            self.version.stats.record_batch(len(batch))
            with tuner.timing(len(batch)):
                self._run_handle(batch)

    def _run_handle(self, requests: list[Request]) -> None:
        """``handle`` the batch; if it fails, each request alone."""
        requests = [r for r in requests if not r.settled]
        if not requests:
            return
        context = self._batch_context(requests)
        try:
            with self._on_stream(), self._stage("handle", requests):
                outputs = self.entry.handle([r.inputs for r in requests], context)
                if inspect.isawaitable(outputs):
                    self._loop = self._loop or asyncio.new_event_loop()
                    outputs = self._loop.run_until_complete(outputs)
            self._answer(requests, context, outputs)
        except Exception as error:  # noqa: BLE001 - the handler's failure is the answer
            self._isolate(requests, error, "handle")

    def _isolate(self, requests: list[Request], error: Exception, stage: str) -> None:
        """Find the request that failed its batch: each alone, or halves of the batch while it
        runs out of memory (what fits still runs batched)."""
        if len(requests) == 1:
            self.version.fail(requests[0], self._inference_error(error, stage))
            return
        if _out_of_memory(error):
            if self.device is not None and self.device.type == "cuda":
                torch.cuda.empty_cache()
            half = len(requests) // 2
            self._run_handle(requests[:half])
            self._run_handle(requests[half:])
            return
        for request in requests:
            self._run_handle([request])

    # The pipeline, for handlers whose preprocess is per request.

    def _dispatch_loop(self) -> None:
        """Hand each request to the pool as it arrives; the forward pass takes them, in order,
        as they are ready."""
        batch_size = self.version.config.batch_size  # take no more than this worker can use
        while (arrived := self.version.queue.take_batch(batch_size, self._stop)) is not None:
            for request in arrived:
                if request.settled:
                    continue
                if asks_for_handle(request.headers):
                    self._ready.put(request, _done(_RUN_HANDLE))
                else:
                    self._ready.put(request, self.pool.submit(self._preprocess, request))
        self._ready.close()

    def _preprocess(self, request: Request) -> Any:
        handler = self.entry.instance
        context = self._batch_context([request])
        context.stages_batches = True  # the inference loop moves the whole batch to the device
        handler.context = context
        with self._stage("preprocess", [request]):
            return handler.preprocess([request.inputs])

    def _inference_loop(self, tuner: Tuner) -> None:
        handler = self.entry.instance
        config = self.version.config
        while (ready := self._ready.take(config.batch_size, self.version.batching)) is not None:
            batch = []
            for request, preprocessed in ready:
                error = preprocessed.exception()
                if error is not None:  # the input's fault: its answer alone
                    self.version.fail(request, self._inference_error(error, "preprocess"))
                elif preprocessed.result() is _RUN_HANDLE:
                    self._run_handle([request])
                elif not request.settled:
                    batch.append((request, preprocessed.result()))
            if batch:
                self._run_batch(handler, batch, tuner)

    def _run_batch(self, handler, ready: list[tuple[Request, Any]], tuner: Tuner) -> None:
        requests = [r for r, _ in ready]
        self.version.stats.record_batch(len(requests))
        context = self._batch_context(requests)
        handler.context = context
        stage = "inference"
        try:
            with tuner.timing(len(requests)), self._on_stream():
                with self._stage(stage, requests):
                    output = handler.inference(_join([data for _, data in ready], self.device))
                stage = "postprocess"
                with self._stage(stage, requests):
                    outputs = handler.postprocess(output)
            self._answer(requests, context, outputs)
        except Exception as error:  # noqa: BLE001
            self._isolate(requests, error, stage)

    @contextmanager
    def _stage(self, name: str, requests: list[Request]):
        """Time a step for the requests' traces, whether it succeeds or fails."""
        start = time.time_ns()
        try:
            yield
        finally:
            stage = Stage(name, start, time.time_ns(), len(requests), self.id)
            for request in requests:
                request.stages.append(stage)

    def _on_stream(self):
        return torch.cuda.stream(self._stream) if self._stream is not None else nullcontext()

    # Answers.

    def _batch_context(self, requests: list[Request]) -> Context:
        context = copy.copy(self.context)
        context.request_ids = {i: r.id for i, r in enumerate(requests)}
        context.request_processor = [RequestProcessor(r.headers) for r in requests]
        by_id = {r.id: r for r in requests}
        context.send_part = lambda request_id, value: by_id[request_id].send_part(value)
        return context

    def _answer(self, requests: list[Request], context: Context, outputs: Any) -> None:
        if not isinstance(outputs, list):
            raise TypeError(f"the handler returned {type(outputs).__name__}, not a list "
                            "with one answer per request")
        if len(outputs) != len(requests):
            raise ValueError(f"the handler returned {len(outputs)} answers for "
                             f"{len(requests)} requests")
        for i, (request, value) in enumerate(zip(requests, outputs)):
            status, _ = context.get_response_status(i)
            headers = dict(context.get_response_headers(i))
            self.version.answer(request, Prediction(value, status or 200, headers))

    def _inference_error(self, error: Exception, stage: str) -> InferenceError:
        """The handler's exception as an error the caller can act on."""
        version = self.version
        status = getattr(error, "error_code", None)
        if isinstance(status, int) and hasattr(error, "message"):  # PredictionException
            message = str(error.message)
        elif _out_of_memory(error):
            status, message = 507, f"Out of resources: {error}"
        else:
            status, message = 500, f"{type(error).__name__}: {error}"
        failure = InferenceError(
            f"{version.label} failed in {stage}: {message}",
            model_name=version.name, version=version.version, stage=stage, status=status,
            traceback="".join(traceback.format_exception(type(error), error, error.__traceback__)),
        )
        MODEL_LOG.error("%s\n%s", failure, failure.traceback.rstrip())
        failure.__cause__ = error  # for %predict, which raises it where the notebook shows it
        return failure


def _pipelines(handler) -> bool:
    """Whether the handler's preprocess is declared per request, and its ``handle`` is
    BaseHandler's: then the pool preprocesses each request as it arrives and the forward pass
    batches what is ready. Otherwise ``handle`` runs on whole batches."""
    cls = type(handler)
    return (isinstance(handler, BaseHandler) and cls.handle is BaseHandler.handle
            and "handle" not in vars(handler)  # replaced on the instance (MicroBatching)
            and declared_per_request(cls.preprocess))


def preprocess_threads(config, workers: int, on_gpu: bool) -> int:
    """The preprocessing pool of each worker: the model's setting, else the CPUs this process
    may use shared among its workers, less one for the forward pass where it runs on a CPU
    (measured on 2 cores: mobilenet_v3_small 163 req/s with one preprocessing thread, 142
    with two, at 4 clients; see bench/RESULTS.md)."""
    if config.preprocess_threads:
        return config.preprocess_threads
    share = len(os.sched_getaffinity(0)) // max(1, workers)
    return max(1, share if on_gpu else share - 1)


def _done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def _out_of_memory(error: BaseException) -> bool:
    return isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)) \
        or "out of memory" in str(error)


def _join(parts: list, device: torch.device | None):
    """Preprocessed requests as one batch on ``device``: tensors concatenated, lists (of
    images) chained. Bound for a GPU, the batch is gathered in pinned memory and copied
    without blocking the CPU."""
    cuda = device is not None and device.type == "cuda"
    if all(isinstance(p, torch.Tensor) for p in parts):
        if not cuda:
            return torch.cat(parts)
        if any(p.is_cuda for p in parts):
            return torch.cat([p.to(device) for p in parts])
        shape = (sum(p.shape[0] for p in parts), *parts[0].shape[1:])
        pinned = torch.empty(shape, dtype=parts[0].dtype, pin_memory=True)
        return torch.cat(parts, out=pinned).to(device, non_blocking=True)
    items = [item for part in parts for item in part]
    if cuda:
        items = [item.pin_memory().to(device, non_blocking=True)
                 if isinstance(item, torch.Tensor) and not item.is_cuda else item for item in items]
    return items
