"""``MicroBatching``: TorchServe's ``ts.handler_utils.MicroBatching``, for handlers that use it.

A handler replaces its ``handle`` with ``MicroBatching(self)``; each batch is then cut into
slices of ``micro_batch_size`` that flow through ``preprocess``, ``inference`` and
``postprocess`` on threads of their own (``parallelism`` of each step, default one), so one
slice's forward pass overlaps the next slice's preprocessing. Answers come back in the batch's
order. Unlike TorchServe's, a step that raises fails the call (and nbserve then runs the batch's
requests one by one) instead of leaving the call waiting for an answer that never comes.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

STEPS = ("preprocess", "inference", "postprocess")


class MicroBatching:
    """A handler's ``handle``, as slices of its batch in a three-step pipeline."""

    def __init__(self, parent_handler, micro_batch_size: int = 1, parallelism: dict | None = None):
        self.handler = parent_handler
        self.micro_batch_size = micro_batch_size
        self._parallelism: dict[str, int] = {}
        self._queues = {step: queue.Queue() for step in STEPS}
        self._threads: dict[str, list[tuple[threading.Event, threading.Thread]]] = {
            step: [] for step in STEPS}
        self._local = threading.local()
        self.parallelism = parallelism or {}

    @property
    def parallelism(self) -> dict:
        """Threads per step, ``{"preprocess": 2, "inference": 1, "postprocess": 1}``."""
        return {step: len(self._threads[step]) for step in STEPS}

    @parallelism.setter
    def parallelism(self, parallelism: dict) -> None:
        unknown = set(parallelism) - set(STEPS)
        if unknown:
            raise ValueError(f"parallelism names steps {sorted(unknown)}; the steps are {STEPS}.")
        self._parallelism.update(parallelism)
        for step in STEPS:
            wanted = self._parallelism.get(step, 1)
            if wanted < 1:
                raise ValueError(f"parallelism of {step} must be at least 1, not {wanted}.")
            threads = self._threads[step]
            while len(threads) < wanted:
                stop = threading.Event()
                thread = threading.Thread(target=self._run_step, args=(step, stop), daemon=True,
                                          name=f"micro-batching-{step}-{len(threads)}")
                thread.start()
                threads.append((stop, thread))
            while len(threads) > wanted:
                stop, thread = threads.pop()
                stop.set()
                thread.join()

    def _run_step(self, step: str, stop: threading.Event) -> None:
        inbox = self._queues[step]
        following = STEPS.index(step) + 1
        outbox = self._queues[STEPS[following]] if following < len(STEPS) else None
        while not stop.is_set():
            try:
                index, data, answer = inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            self._local.micro_batch_idx = index
            try:
                result = getattr(self.handler, step)(data)
            except BaseException as error:  # noqa: BLE001 - the caller's to raise
                answer.set_exception(error)
                continue
            if outbox is None:
                answer.set_result(result)
            else:
                outbox.put((index, result, answer))

    def handle(self, data: list) -> list:
        """The batch's answers, each slice through the three steps."""
        answers = []
        for index, start in enumerate(range(0, len(data), self.micro_batch_size)):
            answer: Future = Future()
            self._queues[STEPS[0]].put((index, data[start:start + self.micro_batch_size], answer))
            answers.append(answer)
        return [item for answer in answers for item in answer.result()]

    def get_micro_batch_idx(self) -> int | None:
        """Which slice of the batch this step's thread is working on."""
        return getattr(self._local, "micro_batch_idx", None)

    def shutdown(self) -> None:
        """Stop the steps' threads."""
        for step in STEPS:
            for stop, thread in self._threads[step]:
                stop.set()
            for stop, thread in self._threads[step]:
                thread.join()
            self._threads[step] = []

    def __call__(self, data: list, context) -> list:
        """The handler's ``handle``: describe and explain requests as ``BaseHandler.handle``
        answers them, predictions through the pipeline."""
        return self.handler.answer(data, context, self.handle)
