"""How a worker feeds its handler: one loop object per way, picked in one place
(:func:`loop_for`), each running on the worker's thread until the queue closes or the worker
stops.

- :class:`HandleLoop`: whole batches through ``handle``, on one thread: a ``preprocess``
  written for the whole batch (padding to the longest text, say) is never split.
- :class:`ContinuousLoop`, for ``continuousBatching: true`` (TorchServe's continuous
  batching, which generation builds on): each ``handle`` call is one step of every running
  request; one whose answer goes on stays for the next step, and new requests join between
  steps, up to ``batch_size``.
- :class:`PipelineLoop`, for a handler whose ``preprocess`` is declared per request
  (:func:`~nbserve.handlers.base.per_request`: the default handlers', and subclasses that
  change only ``inference`` or ``postprocess``): a pool of threads preprocesses each request as
  it arrives (decoding images; Pillow and torch release the GIL, so the pool scales with the
  cores; where it would have one thread, the thread that takes requests from the queue
  preprocesses them itself) while the worker's thread runs ``inference`` and ``postprocess``
  on a batch of whatever is ready, in arrival order.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from nbserve.handlers.base import BaseHandler, asks_for_handle, declared_per_request
from nbserve.serving.host import WorkerHost
from nbserve.serving.queue import ReadyBuffer, Request
from nbserve.serving.service import HandlerService
from nbserve.serving.tuner import Tuner

#: Stands for "run this request through ``handle``" in the pipeline (explain/describe).
_RUN_HANDLE = object()


class HandleLoop:
    """Batches from the queue, each through the handler's ``handle``."""

    def __init__(self, host: WorkerHost, service: HandlerService, stop: threading.Event):
        self.host, self.service, self.stop = host, service, stop
        #: Threads of its own, besides the worker's, that stop when the queue does.
        self.threads: list[threading.Thread] = []

    def run(self, tuner: Tuner) -> None:
        host = self.host
        while (batch := host.queue.take_batch(host.config.batch_size, self.stop, host.batching,
                                              self.service.worker_id)) is not None:
            host.stats.record_batch(len(batch))
            with tuner.timing(len(batch)):
                self.service.handle(batch)

    def close(self) -> None:
        pass


class ContinuousLoop:
    """Running requests stepped through ``handle`` together, joined by new ones between
    steps (:meth:`~nbserve.serving.service.HandlerService.step`)."""

    def __init__(self, host: WorkerHost, service: HandlerService, stop: threading.Event):
        self.host, self.service, self.stop = host, service, stop
        self.threads: list[threading.Thread] = []

    def run(self, tuner: Tuner) -> None:
        host, service, worker = self.host, self.service, self.service.worker_id
        # A handler may say how many requests it runs at once (text generation's max_num_seqs).
        capacity = getattr(service.handler, "max_running", None) or host.config.batch_size
        # Its steps are timed to choose torch's threads, unless its forward passes run on a
        # thread of its own (text generation's), where a step is the wait for the next tokens.
        timed = not getattr(service.handler, "sets_own_threads", False)
        running: list[Request] = []
        while True:
            room = capacity - len(running)
            if room > 0 and not (running and self.stop.is_set()):
                # Wait for work only while none runs; else take what is waiting now.
                arrived = host.queue.take_batch(room, self.stop, worker=worker,
                                                block=not running)
                if arrived is None and not running:
                    return
                running += arrived or []
            staying = [r for r in running if not r.settled]  # timed out, or its client left
            if staying:
                host.stats.record_batch(len(staying))
                with tuner.timing(len(staying)) if timed else contextlib.nullcontext():
                    staying = service.step(staying)
            still = set(map(id, staying))
            gone = [r.id for r in running if id(r) not in still]
            if gone and hasattr(service.handler, "on_requests_gone"):
                # Said at once, not at the next step: there may be none (a generation left
                # alone would decode on to its end). Those it answered are already its own.
                service.handler.on_requests_gone(gone)
            running = staying

    def close(self) -> None:
        pass


class PipelineLoop:
    """Each request preprocessed by the pool as it arrives; the forward pass takes them, in
    order, as they are ready."""

    def __init__(self, host: WorkerHost, service: HandlerService, stop: threading.Event):
        self.host, self.service, self.stop = host, service, stop
        config = host.config
        self.ready = ReadyBuffer(capacity=2 * config.batch_size)
        threads = preprocess_threads(config, config.min_workers, on_gpu=service.cuda)
        # A pool of one would only hand each request from the dispatcher's thread to its own
        # and back (measured: that costs more than it gives on a small model): the dispatcher
        # preprocesses them itself, beside the forward pass, as the pool's one thread would.
        self.pool = None if threads == 1 else ThreadPoolExecutor(
            threads, thread_name_prefix=f"{threading.current_thread().name}-pre",
            initializer=torch.set_num_threads, initargs=(1,))
        self.dispatcher = threading.Thread(target=self._dispatch,
                                           name=f"{threading.current_thread().name}-dispatch",
                                           daemon=True)
        self.dispatcher.start()
        self.threads = [self.dispatcher]

    def _dispatch(self) -> None:
        if self.pool is None:
            torch.set_num_threads(1)  # as the pool's threads
        batch_size = self.host.config.batch_size  # take no more than this worker can use
        while (arrived := self.host.queue.take_batch(batch_size, self.stop,
                                                     worker=self.service.worker_id)) is not None:
            for request in arrived:
                if request.settled:
                    continue
                if asks_for_handle(request.headers):
                    self.ready.put(request, _done(_RUN_HANDLE))
                elif self.pool is None:
                    self.ready.put(request, _called(self._preprocess, request))
                else:
                    self.ready.put(request, self.pool.submit(self._preprocess, request))
        self.ready.close()

    def _preprocess(self, request: Request) -> Any:
        service = self.service
        context = service.context_for([request])
        context.stages_batches = True  # the forward pass moves the whole batch to the device
        service.handler.context = context
        with service.stage("preprocess", [request]):
            return service.handler.preprocess([request.inputs])

    def run(self, tuner: Tuner) -> None:
        host, service = self.host, self.service
        while (ready := self.ready.take(host.config.batch_size, host.batching)) is not None:
            batch = []
            for request, preprocessed in ready:
                error = preprocessed.exception()
                if error is not None:  # the input's fault: its answer alone
                    service.fail(request, error, "preprocess")
                elif preprocessed.result() is _RUN_HANDLE:
                    service.handle([request])
                elif not request.settled:
                    batch.append((request, preprocessed.result()))
            if batch:
                self._forward(batch, tuner)

    def _forward(self, ready: list[tuple[Request, Any]], tuner: Tuner) -> None:
        """``inference`` and ``postprocess`` on one batch of preprocessed requests."""
        service, handler = self.service, self.service.handler
        requests = [r for r, _ in ready]
        self.host.stats.record_batch(len(requests))
        context = service.context_for(requests)
        handler.context = context
        stage = "inference"
        try:
            with tuner.timing(len(requests)), service.on_stream():
                with service.stage(stage, requests):
                    output = handler.inference(_join([data for _, data in ready], service.device))
                stage = "postprocess"
                with service.stage(stage, requests):
                    outputs = handler.postprocess(output)
            service.answer(requests, context, outputs)
        except Exception as error:  # noqa: BLE001 - the handler's failure is the answer
            service.isolate(requests, error, stage)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def loop_for(handler, config) -> type[HandleLoop] | type[ContinuousLoop] | type[PipelineLoop]:
    """Steps for continuous batching; the pipeline where the handler's preprocess is declared
    per request and its ``handle`` is BaseHandler's; else ``handle`` on whole batches."""
    if config.continuous_batching:
        return ContinuousLoop
    cls = type(handler)
    pipelines = (isinstance(handler, BaseHandler) and cls.handle is BaseHandler.handle
                 and "handle" not in vars(handler)  # replaced on the instance (MicroBatching)
                 and declared_per_request(cls.preprocess))
    return PipelineLoop if pipelines else HandleLoop


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


def _called(function, *args) -> Future:
    """``function(*args)`` run here, as a pool's future of it would hold it."""
    future: Future = Future()
    try:
        future.set_result(function(*args))
    except Exception as error:  # noqa: BLE001 - the request's own failure, answered alone
        future.set_exception(error)
    return future


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
