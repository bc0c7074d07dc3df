"""The batching policy: batches grow under load and shrink back, a lone request never waits,
and the user's max_batch_delay is a ceiling; on its own figures and on a real model."""

import threading
import time

import pytest

from nbserve.serving.batch_policy import BatchPolicy
from nbserve.serving.engine import Engine


def test_a_lone_caller_never_waits_and_returning_callers_are_waited_for():
    policy = BatchPolicy(batch_size=8)
    assert policy.decide(1, 0.0) == (1, 0.0)  # nothing measured: take what is there
    for size, seconds in ((1, 0.010), (4, 0.025), (8, 0.045)):
        policy.ran(size, seconds)
    for step in range(100):  # one caller: one request in hand each time
        assert policy.decide(1, 1.0 + step * 0.011) == (1, 0.0)
    assert policy.decide(4, 2.2) == (4, 0.0)  # four callers came back together
    assert policy.decide(1, 2.23) == (4, 0.010)  # one back first: wait, at most a batch of one
    assert policy.decide(6, 2.26) == (6, 0.0)
    assert policy.decide(9, 2.3)[0] == 8  # never past batch_size
    assert policy.decide(1, 3.5) == (1, 0.0)  # a second of one at a time: forgotten


def test_the_users_max_batch_delay_is_a_ceiling():
    policy = BatchPolicy(batch_size=8, max_batch_delay_ms=2)
    policy.ran(1, 0.050)
    policy.decide(8, 0.0)
    assert policy.decide(1, 0.1) == (8, 0.002)


class Load:
    """Closed-loop callers of ``engine.predict``; their number can change as it runs."""

    def __init__(self, engine, name, body):
        self.engine, self.name, self.body = engine, name, body
        self.latencies: list[tuple[float, float]] = []  # (sent at, seconds)
        self.failures: list[BaseException] = []
        self._threads: list[tuple[threading.Event, threading.Thread]] = []

    def callers(self, count: int) -> None:
        while len(self._threads) > count:
            stop, thread = self._threads.pop()
            stop.set()
            thread.join()
        while len(self._threads) < count:
            stop = threading.Event()
            thread = threading.Thread(target=self._call, args=(stop,), daemon=True)
            self._threads.append((stop, thread))
            thread.start()

    def _call(self, stop):
        while not stop.is_set():
            sent = time.monotonic()
            try:
                self.engine.predict(self.name, self.body)
            except Exception as error:  # noqa: BLE001 - recorded, asserted on
                self.failures.append(error)
            self.latencies.append((sent, time.monotonic() - sent))


def watch(version, seconds: float) -> list[tuple[float, int, float]]:
    """The policy's (time, target, wait) every 20 ms for ``seconds``."""
    seen, until = [], time.monotonic() + seconds
    while time.monotonic() < until:
        seen.append((time.monotonic(), version.batching.target, version.batching.wait_s))
        time.sleep(0.02)
    return seen


@pytest.mark.parametrize("max_batch_delay", [0, 3])
def test_a_step_load_grows_batches_and_shrinks_them_back_within_two_seconds(
        classifier_mar, photos, max_batch_delay):
    image = next(iter(photos.values()))
    with Engine() as engine:
        version = engine.register(classifier_mar, batch_size=4, max_batch_delay=max_batch_delay)
        load = Load(engine, "resnet18", image)
        load.callers(1)
        alone = watch(version, 3)
        load.callers(8)
        busy = watch(version, 5)
        load.callers(1)
        after = watch(version, 4)
        load.callers(0)
    assert not load.failures
    assert {target for _, target, _ in alone[25:]} == {1}  # settled: one at a time
    assert all(wait == 0 for _, _, wait in alone[25:])  # and a lone request never waits
    grown = next(t for t, target, _ in busy if target == 4) - busy[0][0]
    assert grown < 2.0, f"the target reached 4 only after {grown:.1f} s"
    assert sum(target == 4 for _, target, _ in busy) > 0.6 * len(busy)
    shrunk = next(t for t, target, wait in after if target == 1 and wait == 0) - after[0][0]
    assert shrunk < 2.0, f"back to 1 only after {shrunk:.1f} s"
    assert all(wait == 0 for t, _, wait in after if t - after[0][0] > 2.0)
    if max_batch_delay:
        assert max(wait for _, _, wait in busy + after) <= max_batch_delay / 1000
    assert version.stats.batch_sizes[4] > 0
