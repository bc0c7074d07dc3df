"""A worker process's side: load the handler the spec names, serve the requests that come over
the socket with the same :class:`~nbserve.serving.worker.Worker` thread isolation runs, and send
back each answer, part, batch and metric as a message (:mod:`.messages`)."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import sys
import threading
import traceback
from concurrent.futures import InvalidStateError
from dataclasses import replace
from multiprocessing.connection import Connection

from nbserve.errors import ClientClosedRequest, InferenceError, NBServeError
from nbserve.handlers.metrics import HandlerMetrics
from nbserve.logs import MODEL_LOG
from nbserve.serving.answers import plain
from nbserve.serving.batch_policy import BatchPolicy
from nbserve.serving.host import version_label
from nbserve.serving.process.messages import Kind, send_message
from nbserve.serving.queue import Prediction, Request, RequestQueue
from nbserve.serving.worker import Worker
from nbserve.store import requirements


def main(fd: int) -> None:
    """Load the handler the spec names and serve requests from the socket until told to stop
    (or the server is gone)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when this process ends
    # What the model says goes to this process's stderr, which the server relays to its own
    # and to model_log.log: MODEL_LOG, and what handlers log at INFO and above, as
    # TorchServe's worker configures its logging.
    MODEL_LOG.addHandler(logging.StreamHandler(sys.stderr))
    logging.basicConfig(stream=sys.stderr, format="%(message)s", level=logging.INFO)
    conn = Connection(fd)
    spec = conn.recv()
    if spec["requirements"] is not None:
        requirements.use(spec["requirements"], first=True)  # this process is the model's alone
    send_lock = threading.Lock()

    def send(kind: str, request_id: str | None, *payload) -> None:
        with send_lock:
            send_message(conn, kind, request_id, *payload)

    outbox = Outbox(send)
    host = ChildHost(spec, outbox.put, starts=send)
    worker = Worker(spec["worker_id"], host, spec["gpu_id"])
    try:
        worker.start()
    except BaseException as error:  # noqa: BLE001 - reported to the server
        outbox.put(Kind.LOAD_FAILED, None, f"{type(error).__name__}: {error}",
                   "".join(traceback.format_exception(error)))
        outbox.close()
        return
    outbox.put(Kind.READY, None, worker.gpu_memory)
    pending: dict[str, Request] = {}  # by id, until answered: what a CANCEL can reach
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            os._exit(0)  # the server is gone: nothing to answer
        if message[0] == Kind.STOP:
            break
        if message[0] == Kind.CANCEL:
            request = pending.get(message[1])
            if request is not None:
                with contextlib.suppress(InvalidStateError):
                    request.future.set_exception(ClientClosedRequest("The client left."))
            continue
        _, request_id, inputs, headers = message
        request = Request(inputs=inputs, headers=headers, id=request_id,
                          on_part=lambda value, rid=request_id: outbox.part(rid, plain(value)))
        pending[request_id] = request
        request.future.add_done_callback(
            lambda _, request=request: (pending.pop(request.id, None),
                                        _reply(outbox.put, host.label, request)))
        host.queue.put(request)
    host.queue.close()
    worker.join()
    outbox.close()
    sys.stdout.flush()
    sys.stderr.flush()


class Outbox:
    """The messages to the server, sent in order by one thread, so that a handler's thread
    never waits on the socket (all but STARTED, which must arrive before the handler runs).
    What piles up while it sends goes together: a decode step streams a part to each of its
    requests and observes a metric for each, and each kind travels as one message
    (:attr:`GROUPS`), not one per request."""

    #: An item's kind -> the message that carries a run of them (a list of their payloads).
    GROUPS = {Kind.PART: Kind.PARTS, Kind.METRIC: Kind.METRICS}

    def __init__(self, send):
        self._send = send
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="nbserve-outbox", daemon=True)
        self._thread.start()

    def part(self, request_id: str, value) -> None:
        self._queue.put((Kind.PART, None, (request_id, value)))

    def put(self, kind: str, request_id: str | None, *payload) -> None:
        self._queue.put((kind, request_id, payload))

    def close(self) -> None:
        """Send what is queued, then stop."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            items = [self._queue.get()]
            while not self._queue.empty():
                items.append(self._queue.get())
            group, grouped = None, []
            for kind, request_id, payload in (item for item in items if item is not None):
                if grouped and kind != group:
                    self._send(self.GROUPS[group], None, grouped)
                    grouped = []
                if kind in self.GROUPS:
                    group = kind
                    grouped.append(payload)
                else:
                    self._send(kind, request_id, *payload)
            if grouped:
                self._send(self.GROUPS[group], None, grouped)
            if items[-1] is None:  # closed
                return


class ChildHost:
    """The model version as this process's worker sees it (a
    :class:`~nbserve.serving.host.WorkerHost`): its requests come over the socket, and its
    answers, batches and metrics go back over it; the server keeps the figures."""

    def __init__(self, spec: dict, send, starts):
        self.archive = spec["archive"]
        self.name, self.version, self.handler = spec["name"], spec["version"], spec["handler"]
        self.label = version_label(self.name, self.version)
        self.config = replace(spec["config"], job_queue_size=sys.maxsize)  # the server's bound
        self.batching = BatchPolicy(self.config.batch_size, self.config.max_batch_delay)
        # Sent at once, not through the outbox: a request the server knows had begun is not
        # run again after this process dies (it may be what killed it).
        self.queue = _StartsSent(self.config.job_queue_size, self.label, starts)
        self.stats = _BatchesSent(send, self.batching)
        # Every update goes to the server, whose cache decides what is exported.
        self.handler_metrics = HandlerMetrics(
            self.name, spec["metrics_config"], auto_detect=True,
            on_update=lambda metric, value, dims: send(
                Kind.METRIC, None, metric.name, metric.unit, list(metric.dimension_names),
                metric.metric_type.value, value, list(dims)))

    def answer(self, request: Request, prediction: Prediction) -> None:
        request.resolve(prediction)

    def fail(self, request: Request, error: NBServeError) -> None:
        request.fail(error)


class _StartsSent(RequestQueue):
    """The process's queue, which tells the server which requests its worker has begun."""

    def __init__(self, capacity: int, label: str, send):
        super().__init__(capacity, label)
        self._send = send

    def take_batch(self, *args, **kwargs) -> list[Request] | None:
        batch = super().take_batch(*args, **kwargs)
        if batch:
            self._send(Kind.STARTED, None, [r.id for r in batch])
        return batch


class _BatchesSent:
    """The process's figures: batch sizes, with the batching policy's latest target and wait,
    go to the server, which counts the answers itself."""

    def __init__(self, send, policy):
        self._send, self._policy = send, policy

    def record_batch(self, size: int) -> None:
        self._send(Kind.BATCH, None, size, self._policy.target, self._policy.wait_s)

    def record_answer(self, *args, **kwargs) -> None:
        pass


def _reply(send, label: str, request: Request) -> None:
    """A settled request's answer or error, to the server, as plain data, with the stages it
    went through (for its trace)."""
    error = request.future.exception()
    stages = [stage.plain() for stage in request.stages]
    if error is None:
        prediction = request.future.result()
        try:
            send(Kind.ANSWER, request.id, plain(prediction.value), prediction.status,
                 {str(k): str(v) for k, v in prediction.headers.items()}, stages)
            return
        except NBServeError as unsendable:  # not plain data, and not JSON either
            error = InferenceError(f"{label}: {unsendable}", model_name="", version="",
                                   stage="answer")
    if type(error).__module__ != NBServeError.__module__:  # the server reads nbserve's errors
        error = InferenceError(str(error), model_name="", version="", stage="answer",
                               status=getattr(error, "status", 500))
    send(Kind.ERROR, request.id, error, stages)
