"""TorchServe's sequence batching, for stateful models (``sequenceBatching: true``).

A client names its sequence in the ``ts_request_sequence_id`` header (one without it starts a
new sequence, ``ts-seq-<uuid>``, as TorchServe names them). Each sequence keeps to one worker,
whose handler holds its state (``context.get_sequence_id(i)`` keys it), and sends that worker
one request at a time, in the order they came: the next only once the previous is answered. A
batch is therefore at most one request from each of several sequences. A sequence ends with a
request that carries ``ts_request_sequence_end: true``, when it has idled past
``sequenceMaxIdleMSec``, or when it is older than ``sequenceTimeoutMSec``; a request naming
it afterwards starts it again. Past ``maxNumSequence`` sequences, or
``maxSequenceJobQueueSize`` requests waiting in one, a request is refused with TorchServe's 503.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable

from nbserve.errors import QueueFull
from nbserve.serving.model_config import ModelConfig
from nbserve.serving.queue import Request, RequestQueue

#: TorchServe's header names (ts_header_key_sequence_id/_start/_end).
SEQUENCE_ID = "ts_request_sequence_id"
SEQUENCE_START = "ts_request_sequence_start"
SEQUENCE_END = "ts_request_sequence_end"


@dataclass(eq=False)
class Sequence:
    id: str
    worker: int
    began: float = field(default_factory=time.monotonic)
    last_active: float = field(default_factory=time.monotonic)
    waiting: deque[Request] = field(default_factory=deque)
    #: The request its worker has, if any: the next waits for its answer.
    running: Request | None = None
    #: Set by a request that ends it: it goes once that one is answered.
    ending: bool = False


class Sequences:
    """A sequence-batched model version's live sequences, feeding its queue."""

    def __init__(self, name: str, config: ModelConfig, queue: RequestQueue,
                 workers: Callable[[], list[int]]):
        self.name, self.config, self.queue, self.workers = name, config, queue, workers
        self.max_sequences = max(config.max_num_sequence, config.batch_size * config.max_workers)
        self._live: dict[str, Sequence] = {}
        # Reentrant: a request that fails as it is released calls back into _answered.
        self._lock = threading.RLock()
        queue.pinning = True

    def __len__(self) -> int:
        return len(self._live)

    def submit(self, request: Request) -> None:
        """Queue ``request`` behind its sequence's earlier ones (QueueFull past the limits)."""
        headers = {k.lower(): v for k, v in request.headers.items()}
        sequence_id = headers.get(SEQUENCE_ID)
        if not sequence_id:
            sequence_id = f"ts-seq-{uuid.uuid4()}"
            request.headers[SEQUENCE_START] = "true"
        request.headers[SEQUENCE_ID] = sequence_id
        with self._lock:
            self._expire(time.monotonic())
            sequence = self._live.get(sequence_id)
            if sequence is None:
                if len(self._live) >= self.max_sequences:
                    raise QueueFull(self._refusal())
                sequence = self._live[sequence_id] = Sequence(sequence_id, self._least_busy())
            elif sequence.ending or \
                    len(sequence.waiting) >= self.config.max_sequence_job_queue_size:
                raise QueueFull(self._refusal())
            sequence.waiting.append(request)
            sequence.ending = str(headers.get(SEQUENCE_END, "")).lower() == "true"
            self._release(sequence)

    def unpin(self, workers: set[int]) -> None:
        """Sequences of workers that stopped move to others (their state is lost with them)."""
        with self._lock:
            for sequence in self._live.values():
                if sequence.worker in workers:
                    sequence.worker = self._least_busy(exclude=workers)
        self.queue.unpin(workers)

    def _release(self, sequence: Sequence) -> None:
        """With the lock held: send the sequence's next request to its worker, if it may go."""
        while sequence.running is None and sequence.waiting:
            request = sequence.waiting.popleft()
            if request.settled:  # timed out, or its client left, while it waited here
                continue
            if sequence.worker is None:  # made before any worker ran
                sequence.worker = self._least_busy()
            request.worker = sequence.worker
            sequence.running = request
            request.future.add_done_callback(lambda _, s=sequence: self._answered(s))
            try:
                self.queue.put(request)
            except QueueFull as full:
                request.fail(full)

    def _answered(self, sequence: Sequence) -> None:
        with self._lock:
            sequence.running = None
            sequence.last_active = time.monotonic()
            if sequence.ending and not sequence.waiting:
                self._live.pop(sequence.id, None)
                return
            self._release(sequence)

    def _expire(self, now: float) -> None:
        """With the lock held: forget idle sequences (nothing waiting or running) past
        sequenceMaxIdleMSec, and those past sequenceTimeoutMSec."""
        idle = self.config.sequence_max_idle_ms / 1000
        timeout = self.config.sequence_timeout_ms / 1000
        for sequence in list(self._live.values()):
            if sequence.running is None and not sequence.waiting and (
                    now - sequence.last_active > idle
                    or (timeout and now - sequence.began > timeout)):
                del self._live[sequence.id]

    def _least_busy(self, exclude: set[int] = frozenset()) -> int | None:
        """The worker with the fewest sequences (None, any worker, while none runs)."""
        workers = [w for w in self.workers() if w not in exclude]
        if not workers:
            return None
        load = Counter(s.worker for s in self._live.values())
        return min(workers, key=lambda w: load[w])

    def _refusal(self) -> str:
        return (f'Model "{self.name}" has no worker to serve inference request. Please use '
                "scale workers API to add workers. If this is a sequence inference, please "
                "check if it is closed, or expired; or exceeds maxSequenceJobQueueSize")
