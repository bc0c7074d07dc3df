"""A worker: one loaded copy of a model's handler, fed batches from its version's queue.

A handler that keeps ``BaseHandler.handle`` runs as a two-stage pipeline: one thread takes the
next batch and preprocesses it (decoding images) while another runs ``inference`` and
``postprocess`` on the batch before it. Any other handler runs ``handle`` on one thread.

Either way, a request that fails takes no neighbour down with it: when a batch fails, each of
its requests is run again on its own, so only the bad one gets the error.
"""

from __future__ import annotations

import copy
import queue
import threading
import time
import traceback
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import torch

from nbserve.batching import Prediction, Request
from nbserve.errors import InferenceError
from nbserve.handlers.base import BaseHandler
from nbserve.handlers.context import Context, RequestProcessor
from nbserve.handlers.loader import load_handler

if TYPE_CHECKING:
    from nbserve.engine import ModelVersion

#: Stands for "run this batch through ``handle``" in the pipeline's hand-off.
_RUN_HANDLE = object()


class Worker:
    """Loads the handler on :meth:`start`, then serves until :meth:`stop` or its queue closes."""

    def __init__(self, worker_id: int, version: ModelVersion, gpu_id: int | None):
        self.id = worker_id
        self.version = version
        self.gpu_id = gpu_id
        self.status = "UNLOADED"
        self.start_time: datetime | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def label(self) -> str:
        return self.version.label

    def start(self) -> None:
        """Load and initialise the handler here (errors propagate), then start serving."""
        version = self.version
        self.status = "LOADING"
        self.entry = load_handler(version.handler, version.model_dir)
        self.context = Context(
            version.name, str(version.model_dir), version.manifest, version.config.batch_size,
            self.gpu_id, limit_max_image_pixels=version.config.limit_max_image_pixels,
            metrics=version.handler_metrics, model_yaml_config=version.config.yaml,
        )
        self.entry.initialize(self.context)
        instance = self.entry.instance
        pipelined = isinstance(instance, BaseHandler) and type(instance).handle is BaseHandler.handle
        if pipelined:
            self._handoff: queue.Queue = queue.Queue()
            self._slot = threading.Semaphore(1)
            targets = [self._preprocess_loop, self._inference_loop]
        else:
            targets = [self._handle_loop]
        name = f"nbserve-{version.name}-{version.version}-w{self.id}"
        self._threads = [threading.Thread(target=t, name=f"{name}-{i}", daemon=True)
                         for i, t in enumerate(targets)]
        self.start_time = datetime.now(timezone.utc)
        self.status = "READY"
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Finish the batch in hand, take no more."""
        self._stop.set()
        self.version.queue.wake()

    def join(self, timeout: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout)
        self.status = "STOPPED"

    @property
    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    # The single-thread loop, for handlers with their own ``handle``.

    def _handle_loop(self) -> None:
        while (batch := self._take_batch()) is not None:
            self._run_handle(batch)

    def _take_batch(self) -> list[Request] | None:
        config = self.version.config
        batch = self.version.queue.take_batch(
            config.batch_size, config.max_batch_delay / 1000, self._stop)
        if batch:
            self.version.stats.record_batch(len(batch))
        return batch

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

    # The two-stage pipeline, for BaseHandler subclasses.

    def _preprocess_loop(self) -> None:
        handler = self.entry.instance
        while True:
            self._slot.acquire()  # at most one preprocessed batch waits for the forward pass
            batch = self._take_batch()
            if batch is None:
                self._handoff.put(None)
                return
            batch = [r for r in batch if not r.settled]
            if not batch:
                self._slot.release()
                continue
            self._handoff.put(self._preprocess(handler, batch))

    def _preprocess(self, handler: BaseHandler, requests: list[Request]):
        context = self._batch_context(requests)
        if any(r.headers.get("explain") == "True" or r.headers.get("describe") == "True"
               for r in requests):
            return requests, context, _RUN_HANDLE
        handler.context = context
        try:
            return requests, context, handler.preprocess([r.inputs for r in requests])
        except Exception as error:  # noqa: BLE001
            if len(requests) == 1:
                self._fail(requests[0], self._inference_error(error, "preprocess"))
                return [], context, None
        kept, inputs = [], []
        for request in requests:
            handler.context = self._batch_context([request])
            try:
                inputs.append(handler.preprocess([request.inputs]))
                kept.append(request)
            except Exception as error:  # noqa: BLE001
                self._fail(request, self._inference_error(error, "preprocess"))
        context = self._batch_context(kept)
        if kept and all(isinstance(t, torch.Tensor) for t in inputs):
            return kept, context, torch.cat(inputs)
        return kept, context, _RUN_HANDLE

    def _inference_loop(self) -> None:
        handler = self.entry.instance
        while True:
            item = self._handoff.get()
            self._slot.release()
            if item is None:
                return
            requests, context, data = item
            if not requests:
                continue
            if data is _RUN_HANDLE:
                self._run_handle(requests)
                continue
            handler.context = context
            stage = "inference"
            try:
                output = handler.inference(data)
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
        return InferenceError(
            f"{version.label} failed in {stage}: {message}",
            model_name=version.name, version=version.version, stage=stage, status=status,
            traceback="".join(traceback.format_exception(type(error), error, error.__traceback__)),
        )
