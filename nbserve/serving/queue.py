"""Requests, the bounded queue they wait in, and how waiting requests become a batch.

A :class:`Request` carries what the handler will see and a future its caller waits on. A model
version's :class:`RequestQueue` holds at most ``job_queue_size`` of them; a worker takes a batch
with :meth:`RequestQueue.take_batch`: whatever is waiting, up to ``batch_size``, waiting for more
only as long as its :class:`~nbserve.serving.batch_policy.BatchPolicy` says it pays. Every request is settled exactly
once: with a :class:`Prediction`, or with an :class:`~nbserve.errors.NBServeError`.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
import uuid
import weakref
from collections import deque
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

from nbserve.errors import ClientClosedRequest, NBServeError, QueueFull, RequestTimeout

if TYPE_CHECKING:
    from nbserve.serving.batch_policy import BatchPolicy


@dataclass
class Prediction:
    """One request's answer: the handler's value, and the status and headers it set."""

    value: Any
    status: int = 200
    headers: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    """One step of a request's way through a worker (``preprocess``, ``inference``,
    ``postprocess``, or ``handle`` for a handler's own ``handle``): wall-clock nanoseconds,
    comparable across a worker process and the server, and the batch it ran in."""

    name: str
    start_ns: int
    end_ns: int
    batch_size: int
    worker: int

    def plain(self) -> tuple:
        """As a worker process sends it."""
        return self.name, self.start_ns, self.end_ns, self.batch_size, self.worker


@dataclass(eq=False)
class Request:
    """One inference request on its way through a model version's queue to a handler."""

    #: What the handler sees for this request: ``{"body": ...}`` or one key per form field.
    inputs: dict
    headers: dict = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    future: Future = field(default_factory=Future)
    received: float = field(default_factory=time.monotonic)
    deadline: float | None = None
    #: When a worker took it from the queue; queue latency is ``started - received``.
    started: float | None = None
    #: Called, on the worker's thread, with each part of the answer the handler sends before
    #: it returns (TorchServe's streaming); None drops the parts.
    on_part: Callable[[Any], None] | None = None
    #: What the worker did with it, for traces (:mod:`nbserve.api.tracing`): one :class:`Stage`
    #: per step, appended as each ends.
    stages: list[Stage] = field(default_factory=list)
    #: The only worker that may take it (a sequence's, nbserve.serving.sequences); None: any.
    worker: int | None = None

    def send_part(self, value: Any) -> None:
        """Hand an intermediate part of the answer to the caller, unless already settled."""
        if self.on_part is not None and not self.settled:
            self.on_part(value)

    def resolve(self, prediction: Prediction) -> bool:
        """Answer the request; False if it was already settled (timed out, say)."""
        try:
            self.future.set_result(prediction)
            return True
        except InvalidStateError:
            return False

    def fail(self, error: BaseException) -> bool:
        """Fail the request; False if it was already settled."""
        try:
            self.future.set_exception(error)
            return True
        except InvalidStateError:
            return False

    @property
    def settled(self) -> bool:
        return self.future.done()


def streamed(submit: Callable[[Callable[[Any], None]], Future]) -> Iterator[Any]:
    """The parts of the answer to ``submit(on_part)``'s request as they come, then the answer's
    value (raising its error, if it failed)."""
    parts: queue.Queue = queue.Queue()
    future = submit(lambda value: parts.put((False, value)))
    future.add_done_callback(lambda done: parts.put((True, done)))
    while True:
        finished, item = parts.get()
        if finished:
            yield item.result().value
            return
        yield item


class RequestQueue:
    """A model version's waiting requests, bounded, from which workers take batches."""

    def __init__(self, capacity: int, label: str):
        self.capacity = capacity
        self.label = label
        #: Requests dropped unrun because their client closed the connection while they waited.
        self.abandoned = 0
        self._items: deque[Request] = deque()
        self._cond = threading.Condition()
        self._closed = False
        #: Whether requests may be pinned to a worker (a sequence-batched model's are).
        self.pinning = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, request: Request) -> None:
        """Queue a request, or raise QueueFull (the caller answers 503, nothing is dropped)."""
        with self._cond:
            if self._closed:
                raise QueueFull(f"{self.label} is being unloaded and takes no new requests.")
            if len(self._items) >= self.capacity:
                raise QueueFull(
                    f"{self.label} is busy: its queue of {self.capacity} requests is full. "
                    "Retry shortly, or raise job_queue_size or the number of workers."
                )
            self._items.append(request)
            self._notify(request)

    def requeue(self, request: Request) -> None:
        """Put back, first in line, a request a worker took and could not run (it stopped)."""
        with self._cond:
            self._items.appendleft(request)
            self._notify(request)

    def _notify(self, request: Request) -> None:
        """Wake a worker for ``request``: any one, or all when only one of them may take it."""
        if request.worker is None:
            self._cond.notify()
        else:
            self._cond.notify_all()

    def unpin(self, workers: set[int]) -> None:
        """Let any worker take the waiting requests pinned to ``workers`` (which stopped)."""
        with self._cond:
            for request in self._items:
                if request.worker in workers:
                    request.worker = None
            self._cond.notify_all()

    def close(self) -> None:
        """Take no more requests; workers finish what is queued, then see the end."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wake(self) -> None:
        """Wake waiting workers, so that one asked to stop notices."""
        with self._cond:
            self._cond.notify_all()

    def take_batch(self, max_size: int, stop: threading.Event,
                   policy: BatchPolicy | None = None,
                   worker: int | None = None, block: bool = True) -> list[Request] | None:
        """Block for the next batch; None once the queue is closed and empty, or ``stop`` is set.

        Takes what is waiting, up to ``max_size``, leaving requests pinned to other workers
        than ``worker``; with a ``policy``, first waits as long as it says for the batch to
        fill to its target. Requests settled while waiting (timed out) are skipped. Without
        ``block``, what is waiting now, perhaps nothing.
        """
        with self._cond:
            while True:
                self._drop_settled()
                if self._takeable(worker) or self._closed or stop.is_set():
                    break
                if not block:
                    return []
                self._cond.wait()
            if stop.is_set() or not self._takeable(worker):
                return None
            wait_to_fill(self._cond, policy, lambda: len(self._takeable(worker)), max_size,
                         lambda: self._closed or stop.is_set())
            self._drop_settled()
            if self.pinning:
                batch = self._takeable(worker)[:max_size]
                taken = set(map(id, batch))
                self._items = deque(r for r in self._items if id(r) not in taken)
            else:
                batch = [self._items.popleft() for _ in range(min(max_size, len(self._items)))]
        started = time.monotonic()
        for request in batch:
            request.started = started
        return batch

    def _takeable(self, worker: int | None):
        if not self.pinning:
            return self._items
        return [r for r in self._items if r.worker is None or r.worker == worker]

    def fail_all(self, error: NBServeError) -> None:
        with self._cond:
            items, self._items = self._items, deque()
        for request in items:  # outside the lock: a request's callbacks may queue another
            request.fail(error)

    def _drop_settled(self) -> None:
        if any(r.settled for r in self._items):
            self.abandoned += sum(isinstance(r.future.exception(), ClientClosedRequest)
                                  for r in self._items if r.settled)
            self._items = deque(r for r in self._items if not r.settled)


def wait_to_fill(cond: threading.Condition, policy: BatchPolicy | None,
                 count: Callable[[], int], max_size: int, done: Callable[[], bool]) -> None:
    """With ``cond`` held and a batch begun (``count()`` requests in hand): how it waits for
    more, as long as ``policy`` says, for its target (at most ``max_size``), or until
    ``done()``. Without a policy, not at all."""
    if policy is None:
        return
    target, wait = policy.decide(count())
    target = min(target, max_size)
    until = time.monotonic() + wait
    while count() < target and not done():
        left = until - time.monotonic()
        if left <= 0:
            return
        cond.wait(left)


class DeadlineWatcher:
    """Fails requests still unanswered at their deadline, wherever they are.

    One thread for the whole engine: a request times out the same way whether it is queued,
    being preprocessed, or in a forward pass that has not returned. A late answer is dropped.
    """

    def __init__(self):
        # Weak references: an answered request is not kept alive until its deadline.
        self._heap: list[tuple[float, int, weakref.ref, str]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="nbserve-deadlines", daemon=True)
        self._thread.start()

    def watch(self, request: Request, label: str) -> None:
        if request.deadline is None:
            return
        with self._cond:
            heapq.heappush(self._heap, (request.deadline, next(self._counter), weakref.ref(request), label))
            if self._heap[0][2]() is request:
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                while self._heap and (self._heap[0][0] <= now or _settled(self._heap[0][2])):
                    _, _, ref, label = heapq.heappop(self._heap)
                    request = ref()
                    if request is not None and not request.settled:
                        waited = now - request.received
                        request.fail(RequestTimeout(
                            f"{label} did not answer within {waited:.3g} s "
                            f"(response_timeout); the request was abandoned."))
                timeout = self._heap[0][0] - now if self._heap else None
                self._cond.wait(timeout)


def _settled(ref: weakref.ref) -> bool:
    request = ref()
    return request is None or request.settled


class ReadyBuffer:
    """Requests handed to preprocessing, in arrival order, each with the future of its
    preprocessed input. The forward pass takes those at the front that are ready, so batches
    keep the order requests came in. Bounded, so preprocessing waits rather than running far
    ahead of the forward pass."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: deque[tuple[Request, Future]] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, request: Request, preprocessed: Future) -> None:
        with self._cond:
            while len(self._items) >= self.capacity:
                self._cond.wait()
            self._items.append((request, preprocessed))
        preprocessed.add_done_callback(self._wake)

    def _wake(self, _) -> None:
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _ready(self) -> int:
        count = 0
        for _, preprocessed in self._items:
            if not preprocessed.done():
                break
            count += 1
        return count

    def take(self, max_size: int, policy: BatchPolicy | None = None
             ) -> list[tuple[Request, Future]] | None:
        """The ready requests at the front, up to ``max_size`` (after waiting as long as
        ``policy`` says for more); None at the end."""
        with self._cond:
            while not self._ready() and not (self._closed and not self._items):
                self._cond.wait()
            if not self._items:
                return None
            wait_to_fill(self._cond, policy, self._ready, max_size, lambda: self._closed)
            taken = [self._items.popleft() for _ in range(min(max_size, self._ready()))]
            self._cond.notify_all()
            return taken
