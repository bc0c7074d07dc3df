"""TorchServe's batch contract, kept in one place as ``ts/service.py`` keeps it: the handler is
given a list of inputs and returns a list of the same length, one answer each; a failure becomes
the answer of the request that caused it, never of its neighbours; each step is timed for the
requests' traces. The loops (:mod:`.loops`) decide what runs when; this decides what an answer
is."""

from __future__ import annotations

import asyncio
import copy
import inspect
import time
import traceback
from contextlib import contextmanager, nullcontext
from typing import Any

import torch

from nbserve.errors import InferenceError
from nbserve.handlers.context import Context, RequestProcessor
from nbserve.logs import MODEL_LOG
from nbserve.serving.host import WorkerHost
from nbserve.serving.queue import Prediction, Request, Stage


class HandlerService:
    """One loaded handler (``entry``, as :func:`~nbserve.handlers.loader.load_handler` returns
    it) and the context it was initialized with, serving ``host``'s requests."""

    def __init__(self, host: WorkerHost, entry, context: Context, worker_id: int):
        self.host, self.entry, self.context, self.worker_id = host, entry, context, worker_id
        self.handler = entry.instance
        self.device: torch.device | None = getattr(self.handler, "device", None)
        #: Whether it runs on a GPU: then on a CUDA stream of its own.
        self.cuda = self.device is not None and self.device.type == "cuda"
        self._stream = torch.cuda.Stream(self.device) if self.cuda else None
        #: Where an ``async def handle`` runs (TorchServe's asyncCommunication handlers): one
        #: loop for the worker's life, so what the handler binds to it stays usable.
        self._loop: asyncio.AbstractEventLoop | None = None

    def handle(self, requests: list[Request]) -> None:
        """``handle`` the batch; if it fails, find the request that failed it."""
        requests = [r for r in requests if not r.settled]
        if not requests:
            return
        context = self.context_for(requests)
        try:
            self.answer(requests, context, self.call_handle(requests, context))
        except Exception as error:  # noqa: BLE001 - the handler's failure is the answer
            self.isolate(requests, error, "handle")

    def step(self, requests: list[Request]) -> list[Request]:
        """One step of TorchServe's continuous batching: ``handle`` on every running request;
        a request whose answer goes on (``ts_stream_next: true``, or the handler's
        ``context.stopping_criteria`` says not yet) gets it as a part (none for None) and
        stays; the others get their answer. The requests that stay. A step that fails fails
        them all: the handler's state for each has moved on, so none can be run again alone."""
        context = self.context_for(requests)
        context.stopping_criteria = None
        try:
            outputs = self.call_handle(requests, context)
            self.check_answers(requests, outputs)
        except Exception as error:  # noqa: BLE001 - the handler's failure is the answer
            for request in requests:
                self.fail(request, error, "handle")
            return []
        staying = []
        for i, (request, value) in enumerate(zip(requests, outputs)):
            headers = dict(context.get_response_headers(i))
            goes_on = headers.pop("ts_stream_next", "false") == "true"
            if context.stopping_criteria:
                stop = context.stopping_criteria[i](value)
                goes_on = goes_on if stop is None else not stop
            if goes_on and not request.settled:
                if value is not None:  # a step may have nothing new for it
                    request.send_part(value)
                staying.append(request)
            else:
                status, _ = context.get_response_status(i)
                self.host.answer(request, Prediction(value, status or 200, headers))
        return staying

    def call_handle(self, requests: list[Request], context: Context) -> Any:
        """The handler's ``handle`` on the batch (awaited, for an ``async def``), timed for
        the requests' traces and as TorchServe's PredictionTime."""
        began = time.time()
        with self.on_stream(), self.stage("handle", requests):
            outputs = self.entry.handle([r.inputs for r in requests], context)
            if inspect.isawaitable(outputs):
                self._loop = self._loop or asyncio.new_event_loop()
                outputs = self._loop.run_until_complete(outputs)
        if context.metrics is not None:
            context.metrics.add_time("PredictionTime", round((time.time() - began) * 1000, 2),
                                     None, "ms")
        return outputs

    def isolate(self, requests: list[Request], error: Exception, stage: str) -> None:
        """A batch failed: each request alone, or halves of the batch while it runs out of
        memory (what fits still runs batched), until what fails is the one to blame."""
        if len(requests) == 1:
            self.fail(requests[0], error, stage)
            return
        if out_of_memory(error):
            if self.cuda:
                torch.cuda.empty_cache()
            half = len(requests) // 2
            self.handle(requests[:half])
            self.handle(requests[half:])
            return
        for request in requests:
            self.handle([request])

    def context_for(self, requests: list[Request]) -> Context:
        """The handler's context for one batch: its requests' ids, headers and streams."""
        context = copy.copy(self.context)
        context.request_ids = {i: r.id for i, r in enumerate(requests)}
        context.request_processor = [RequestProcessor(r.headers) for r in requests]
        by_id = {r.id: r for r in requests}
        context.send_part = lambda request_id, value: by_id[request_id].send_part(value)
        return context

    def answer(self, requests: list[Request], context: Context, outputs: Any) -> None:
        """One answer per request, with the status and headers the handler set for it."""
        self.check_answers(requests, outputs)
        for i, (request, value) in enumerate(zip(requests, outputs)):
            status, _ = context.get_response_status(i)
            headers = dict(context.get_response_headers(i))
            self.host.answer(request, Prediction(value, status or 200, headers))

    @staticmethod
    def check_answers(requests: list[Request], outputs: Any) -> None:
        """TorchServe's contract: a list with one answer per request."""
        if not isinstance(outputs, list):
            raise TypeError(f"the handler returned {type(outputs).__name__}, not a list "
                            "with one answer per request")
        if len(outputs) != len(requests):
            raise ValueError(f"the handler returned {len(outputs)} answers for "
                             f"{len(requests)} requests")

    def fail(self, request: Request, error: Exception, stage: str) -> None:
        """The handler's exception as the request's answer: a status the caller can act on,
        with the handler's traceback."""
        host = self.host
        status = getattr(error, "error_code", None)
        if isinstance(status, int) and hasattr(error, "message"):  # PredictionException
            message = str(error.message)
        elif out_of_memory(error):
            status, message = 507, f"Out of resources: {error}"
        else:
            status, message = 500, f"{type(error).__name__}: {error}"
        failure = InferenceError(
            f"{host.label} failed in {stage}: {message}",
            model_name=host.name, version=host.version, stage=stage, status=status,
            traceback="".join(traceback.format_exception(type(error), error, error.__traceback__)),
        )
        MODEL_LOG.error("%s\n%s", failure, failure.traceback.rstrip())
        failure.__cause__ = error  # for %predict, which raises it where the notebook shows it
        host.fail(request, failure)

    @contextmanager
    def stage(self, name: str, requests: list[Request]):
        """Time a step for the requests' traces, whether it succeeds or fails."""
        start = time.time_ns()
        try:
            yield
        finally:
            stage = Stage(name, start, time.time_ns(), len(requests), self.worker_id)
            for request in requests:
                request.stages.append(stage)

    def on_stream(self):
        """The worker's own CUDA stream, where it has one."""
        return torch.cuda.stream(self._stream) if self._stream is not None else nullcontext()

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()


def out_of_memory(error: BaseException) -> bool:
    return isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)) \
        or "out of memory" in str(error)
