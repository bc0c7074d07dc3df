"""A worker: one loaded copy of a model's handler, fed batches from its version's queue.

A handler whose ``preprocess`` is nbserve's own (the default handlers, and subclasses that
change only ``inference`` or ``postprocess``) runs as a pipeline: one thread preprocesses each
request as it arrives (decoding images) while another runs ``inference`` and ``postprocess`` on
a batch of whatever is ready. Any other handler runs ``handle`` on whole batches, one thread.

The model loads on the worker's own thread, and only that thread runs torch with several
intra-op threads (the preprocessing thread uses one); how many, :mod:`nbserve.tuner` measures.

Either way, a request that fails takes no neighbour down with it: when a batch fails, each of
its requests is run again on its own, so only the bad one gets the error.
"""

from __future__ import annotations

import copy
import os
import threading
import time
import traceback
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import torch

from nbserve.batching import Prediction, ReadyBuffer, Request
from nbserve.errors import InferenceError
from nbserve.handlers.base import BaseHandler, asks_for_handle
from nbserve.handlers.context import Context, RequestProcessor
from nbserve.handlers.loader import archive_imports, load_handler
from nbserve.live import LiveModel
from nbserve.tuner import Tuner

if TYPE_CHECKING:
    from nbserve.engine import ModelVersion

#: Stands for "run this request through ``handle``" in the pipeline (explain/describe).
_RUN_HANDLE = object()


class Worker:
    """Loads the handler on :meth:`start`, then serves until :meth:`stop` or its queue closes."""

    #: A thread is never restarted (:class:`~nbserve.process_worker.ProcessWorker`s are).
    restarts = 0
    last_death: str | None = None

    def __init__(self, worker_id: int, version: ModelVersion, gpu_id: int | None):
        self.id = worker_id
        self.version = version
        self.gpu_id = gpu_id
        self.status = "UNLOADED"
        self.start_time: datetime | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def pid(self) -> int:
        return os.getpid()

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
        pipelined = _pipelines(self.entry.instance)
        config = version.config
        if pipelined:
            self._ready = ReadyBuffer(capacity=2 * config.batch_size)
            single_threaded = threading.Event()
            preprocess = threading.Thread(target=self._preprocess_loop, args=(single_threaded,),
                                          name=f"{threading.current_thread().name}-pre", daemon=True)
            self._threads.append(preprocess)
            preprocess.start()
            single_threaded.wait()  # set_num_threads also sets the default of later threads
        self.tuner = tuner = Tuner(enabled=self.gpu_id is None)
        self.start_time = datetime.now(timezone.utc)
        self.status = "READY"
        self._loaded.set()
        if pipelined:
            self._inference_loop(tuner)
        else:
            self._handle_loop(tuner)

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
                config.batch_size, config.max_batch_delay / 1000, self._stop)) is not None:
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
            outputs = self.entry.handle([r.inputs for r in requests], context)
            self._answer(requests, context, outputs)
        except Exception as error:  # noqa: BLE001 - the handler's failure is the answer
            self._isolate(requests, error, "handle")

    def _isolate(self, requests: list[Request], error: Exception, stage: str) -> None:
        if len(requests) == 1:
            self._fail(requests[0], self._inference_error(error, stage))
            return
        for request in requests:
            self._run_handle([request])

    # The pipeline, for handlers whose preprocess is nbserve's own (per request by nature).

    def _preprocess_loop(self, single_threaded: threading.Event) -> None:
        """Preprocess each request as it arrives; the forward pass batches what is ready."""
        torch.set_num_threads(1)
        single_threaded.set()
        handler = self.entry.instance
        batch_size = self.version.config.batch_size  # take no more than this worker can use
        while (arrived := self.version.queue.take_batch(batch_size, 0, self._stop)) is not None:
            for request in arrived:
                if request.settled:
                    continue
                if asks_for_handle(request.headers):
                    self._ready.put(request, _RUN_HANDLE)
                    continue
                handler.context = self._batch_context([request])
                try:
                    data = handler.preprocess([request.inputs])
                except Exception as error:  # noqa: BLE001 - the input's fault, its answer
                    self._fail(request, self._inference_error(error, "preprocess"))
                    continue
                self._ready.put(request, data)
        self._ready.close()

    def _inference_loop(self, tuner: Tuner) -> None:
        handler = self.entry.instance
        config = self.version.config
        while (ready := self._ready.take(config.batch_size, config.max_batch_delay / 1000)) is not None:
            batch = []
            for request, data in ready:
                if data is _RUN_HANDLE:
                    self._run_handle([request])
                elif not request.settled:
                    batch.append((request, data))
            ready = batch
            if not ready:
                continue
            requests = [r for r, _ in ready]
            self.version.stats.record_batch(len(requests))
            context = self._batch_context(requests)
            handler.context = context
            stage = "inference"
            try:
                with tuner.timing(len(requests)):
                    output = handler.inference(_join([data for _, data in ready]))
                    stage = "postprocess"
                    outputs = handler.postprocess(output)
                self._answer(requests, context, outputs)
            except Exception as error:  # noqa: BLE001
                self._isolate(requests, error, stage)

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
        finished = time.monotonic()
        for i, (request, value) in enumerate(zip(requests, outputs)):
            status, _ = context.get_response_status(i)
            headers = dict(context.get_response_headers(i))
            if request.resolve(Prediction(value, status or 200, headers)):
                self.version.stats.record_answer(request.received, request.started, finished)

    def _fail(self, request: Request, error: InferenceError) -> None:
        if request.fail(error):
            self.version.stats.record_answer(request.received, request.started, time.monotonic(),
                                             error_type=str(error.status))

    def _inference_error(self, error: Exception, stage: str) -> InferenceError:
        """The handler's exception as an error the caller can act on."""
        version = self.version
        status = getattr(error, "error_code", None)
        if isinstance(status, int) and hasattr(error, "message"):  # PredictionException
            message = str(error.message)
        elif isinstance(error, MemoryError) or "out of memory" in str(error):
            status, message = 507, f"Out of resources: {error}"
        else:
            status, message = 500, f"{type(error).__name__}: {error}"
        failure = InferenceError(
            f"{version.label} failed in {stage}: {message}",
            model_name=version.name, version=version.version, stage=stage, status=status,
            traceback="".join(traceback.format_exception(type(error), error, error.__traceback__)),
        )
        failure.__cause__ = error  # for %predict, which raises it where the notebook shows it
        return failure


def _pipelines(handler) -> bool:
    """Whether the handler's preprocess is nbserve's own, which is per request by nature.

    Then each request is preprocessed as it arrives and the forward pass batches what is ready.
    A custom preprocess may depend on its batch (padding to the longest text, say): such
    handlers, and those with their own ``handle``, run ``handle`` on whole batches.
    """
    from nbserve.handlers.object_detector import ObjectDetector
    from nbserve.handlers.vision import VisionHandler

    cls = type(handler)
    return (isinstance(handler, BaseHandler) and cls.handle is BaseHandler.handle
            and "handle" not in vars(handler)  # replaced on the instance (MicroBatching)
            and cls.preprocess in (BaseHandler.preprocess, VisionHandler.preprocess,
                                   ObjectDetector.preprocess))


def _join(parts: list):
    """Preprocessed requests as one batch: tensors concatenated, lists (of images) chained."""
    if all(isinstance(p, torch.Tensor) for p in parts):
        return torch.cat(parts)
    return [item for part in parts for item in part]
