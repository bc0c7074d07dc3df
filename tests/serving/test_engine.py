"""The engine: batching, failures that stay with their request, queues, timeouts, scaling and
replacing models, all without losing a request."""

import functools
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait

import pytest

from nbserve.errors import (
    InferenceError,
    ModelAlreadyRegistered,
    ModelNotFound,
    QueueFull,
    RequestTimeout,
)
from nbserve.serving.engine import Engine
from nbserve.store.archiver import archive
from tests.support.archives import CONTROLLED, controlled, header_classifier
from tests.support.helpers import assert_same_answer


@pytest.fixture
def ctl(tmp_path):
    return controlled(tmp_path)


def submit_many(engine, name, bodies, **kwargs):
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda b: engine.submit(name, {"body": b}, **kwargs), bodies))


def test_batching_gives_the_answers_of_no_batching(classifier_mar, photos):
    bodies = [photos[p] for p in ("cat.jpg", "astronaut.jpg", "coffee.png", "noise.jpg")] * 2
    with Engine() as engine:
        engine.register(classifier_mar, model_name="one", batch_size=1)
        engine.register(classifier_mar, model_name="eight", batch_size=8, max_batch_delay=500)
        alone = [engine.predict("one", b) for b in bodies]
        batched = [f.result().value for f in submit_many(engine, "eight", bodies)]
        assert max(engine.get("eight").stats.batch_sizes) > 1
    assert_same_answer(batched, alone, tolerance=1e-5)


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_a_bad_image_fails_alone_in_its_batch(classifier_mar, photos, isolation):
    bodies = [photos["cat.jpg"], b"not an image", photos["coffee.png"], b"", photos["noise.jpg"]]
    with Engine() as engine:
        engine.register(classifier_mar, batch_size=8, max_batch_delay=500, isolation=isolation)
        # Five at once first: the batching policy learns there are five, and what one costs,
        # so it waits for the rest of the next five while they are preprocessed.
        wait(submit_many(engine, "resnet18", [photos["cat.jpg"]] * 5))
        batches = engine.get("resnet18").stats.batch_sizes
        before = batches.copy()
        futures = submit_many(engine, "resnet18", bodies)
        wait(futures)
        assert max(batches - before) > 1, batches - before
    assert [f.exception() is None for f in futures] == [True, False, True, False, True]
    assert {f.exception().status for f in futures if f.exception()} == {400}
    assert all(len(f.result().value) == 5 for f in futures if f.exception() is None)


def test_headers_a_pipelined_handler_sets_reach_their_own_answers(tmp_path, photos):
    """Requests are preprocessed while the forward pass runs; the context postprocess sees
    must still be its own batch's, or the headers it sets are lost."""
    with Engine() as engine:
        engine.register(header_classifier(tmp_path), batch_size=4)
        futures = submit_many(engine, "headers", [photos["cat.jpg"]] * 48)
        predictions = [f.result() for f in futures]
        assert max(engine.get("headers").stats.batch_sizes) > 1
    assert [bool(p.headers.get("X-Request-Id")) for p in predictions] == [True] * 48
    assert len({p.headers["X-Request-Id"] for p in predictions}) == 48


def test_a_handler_exception_fails_only_its_request(ctl):
    with Engine() as engine:
        engine.register(ctl, batch_size=8, max_batch_delay=300)
        futures = submit_many(engine, "ctl", ["a", "boom", "c", "d"])
        wait(futures)
    error = futures[1].exception()
    assert isinstance(error, InferenceError) and error.status == 500
    assert "boom was asked for" in str(error) and "ctl" in str(error)
    assert 'raise ValueError("boom was asked for")' in error.traceback
    assert [f.result().value["echo"] for i, f in enumerate(futures) if i != 1] == ["a", "c", "d"]


def test_response_status_set_by_the_handler_is_kept(ctl):
    with Engine() as engine:
        engine.register(ctl)
        prediction = engine.submit("ctl", {"body": {"status": 418}}).result()
    assert prediction.status == 418


def test_a_full_queue_is_a_503_and_every_accepted_request_is_answered(ctl):
    with Engine() as engine:
        engine.register(ctl, batch_size=1, job_queue_size=3)
        accepted, refused = [engine.submit("ctl", {"body": {"sleep": 1}})], 0
        deadline = time.monotonic() + 30
        while len(engine.get("ctl").queue):  # until the worker holds it, out of the queue
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for _ in range(11):
            try:
                accepted.append(engine.submit("ctl", {"body": {"sleep": 0.1}}))
            except QueueFull as e:
                refused += 1
                assert e.status == 503 and "queue of 3 requests is full" in str(e)
        assert (len(accepted), refused) == (1 + 3, 8)  # the one in hand, and a full queue
        assert all(f.result(timeout=10).value["tag"] == "v1" for f in accepted)


def test_the_queue_holds_a_thousand_waiting_requests(ctl):
    with Engine() as engine:
        engine.register(ctl, batch_size=64)
        futures = [engine.submit("ctl", {"body": i}) for i in range(1000)]
        assert [f.result(timeout=60).value["echo"] for f in futures] == list(range(1000))


def test_a_request_past_its_timeout_is_a_408_and_the_model_goes_on(ctl):
    with Engine() as engine:
        engine.register(ctl, batch_size=1, response_timeout=0.3)
        slow = engine.submit("ctl", {"body": {"sleep": 1.0}})
        queued = engine.submit("ctl", {"body": "behind the slow one"})
        for future in (slow, queued):
            with pytest.raises(RequestTimeout) as raised:
                future.result(timeout=5)
            assert raised.value.status == 408 and "response_timeout" in str(raised.value)
        time.sleep(1.0)
        assert engine.predict("ctl", "after") == {"echo": "after", "batch": 1, "tag": "v1"}
        assert engine.predict("ctl", "own timeout", timeout=5)["echo"] == "own timeout"


def steady_load(engine, futures, stop, sleep):
    """Requests to ctl every 2 ms, at most 20 unanswered (a process worker takes seconds to
    start, and the queue must not fill meanwhile)."""
    while not stop.is_set():
        futures.append(engine.submit("ctl", {"body": {"sleep": sleep}}))
        if len(futures) > 20:
            futures[-20].exception(timeout=60)
        time.sleep(0.002)


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_scaling_up_and_down_under_load_loses_nothing(ctl, isolation):
    with Engine() as engine:
        engine.register(ctl, batch_size=1, isolation=isolation)
        futures, stop = [], threading.Event()
        load = functools.partial(steady_load, engine, futures, stop, 0.01)

        thread = threading.Thread(target=load)
        thread.start()
        engine.scale("ctl", min_workers=3)
        assert len(engine.get("ctl").workers) == 3
        time.sleep(0.3)
        engine.scale("ctl", min_workers=1)
        time.sleep(0.3)
        stop.set()
        thread.join()
        assert [w.status for w in engine.get("ctl").workers] == ["READY"]
        assert all(f.result(timeout=10).value["tag"] == "v1" for f in futures)
        assert len(futures) > 50


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_replacing_a_model_under_load_answers_every_request(tmp_path, isolation):
    with Engine() as engine:
        engine.register(controlled(tmp_path / "one", "v1"), batch_size=4, isolation=isolation)
        futures, stop = [], threading.Event()
        load = functools.partial(steady_load, engine, futures, stop, 0.005)

        thread = threading.Thread(target=load)
        thread.start()
        time.sleep(0.2)
        engine.register(controlled(tmp_path / "two", "v2"), batch_size=4, replace=True,
                        isolation=isolation)
        time.sleep(0.2)
        stop.set()
        thread.join()
        tags = [f.result(timeout=10).value["tag"] for f in futures]
    assert tags == sorted(tags)  # every v1 answer came before the first v2 one
    assert {"v1", "v2"} == set(tags)


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_unregister_answers_what_is_queued_then_forgets_the_model(ctl, isolation):
    with Engine() as engine:
        engine.register(ctl, batch_size=1, isolation=isolation)
        queued = [engine.submit("ctl", {"body": {"sleep": 0.05}}) for _ in range(5)]
        engine.unregister("ctl")
        assert all(f.result(timeout=0).value["tag"] == "v1" for f in queued)
        with pytest.raises(ModelNotFound, match="Model not found: ctl"):
            engine.predict("ctl", "late")


def test_versions_and_the_default_version(tmp_path):
    with Engine() as engine:
        engine.register(controlled(tmp_path / "one", "v1"))
        engine.register(controlled(tmp_path / "two", "v2"), version="2.0")
        assert engine.predict("ctl", "x")["tag"] == "v1"  # the first version stays the default
        assert engine.predict("ctl", "x", version="2.0")["tag"] == "v2"
        engine.set_default("ctl", "2.0")
        assert engine.predict("ctl", "x")["tag"] == "v2"
        with pytest.raises(ModelAlreadyRegistered):
            engine.register(controlled(tmp_path / "three", "v3"), version="2.0")
        with pytest.raises(ModelNotFound, match="Model version: 9.9 does not exist for model: ctl"):
            engine.predict("ctl", "x", version="9.9")
        engine.unregister("ctl", "2.0")
        assert engine.predict("ctl", "x")["tag"] == "v1"


def test_model_config_yaml_sets_batching(tmp_path):
    handler = tmp_path / "controlled_cfg.py"
    handler.write_text(CONTROLLED.format(tag="cfg"))
    (tmp_path / "model-config.yaml").write_text("batchSize: 3\nmaxBatchDelay: 200\nminWorkers: 2\n")
    mar = archive("cfg", "1.0", str(handler), config_file=tmp_path / "model-config.yaml",
                  export_path=tmp_path)
    with Engine() as engine:
        version = engine.register(mar)
        assert (version.config.batch_size, version.config.max_batch_delay) == (3, 200)
        assert len(version.workers) == 2
        assert engine.register(mar, model_name="cfg2", batch_size=5).config.batch_size == 5
