"""A worker's two ways of running a handler, and what decides between them."""

import pytest

from nbserve.serving.engine import Engine
from nbserve.store.archiver import archive

PIPELINED = '''\
import torch
from ts.torch_handler.base_handler import BaseHandler


class Doubler(BaseHandler):
    """Keeps BaseHandler's handle and preprocess: the worker pipelines it."""

    def initialize(self, context):
        self.model = lambda x: x * 2
        self.initialized = True

    def explain_handle(self, data_preprocess, raw_data):
        return [{"explained": data_preprocess.tolist()}]
'''

WHOLE_BATCH = '''\
import torch
from ts.torch_handler.base_handler import BaseHandler


class Padder(BaseHandler):
    """Preprocesses the batch as a whole: the worker runs handle on whole batches."""

    def initialize(self, context):
        self.model = lambda x: x * 2
        self.initialized = True

    def preprocess(self, data):
        return torch.as_tensor([row["body"] for row in data])
'''


def serve(engine, tmp_path, name, code):
    handler = tmp_path / f"{name}.py"
    handler.write_text(code)
    return engine.register(archive(name, "1.0", str(handler), export_path=tmp_path))


def test_a_handler_keeping_basehandlers_preprocess_is_pipelined_and_explain_finds_handle(tmp_path):
    with Engine() as engine:
        version = serve(engine, tmp_path, "doubler", PIPELINED)
        assert len(version.workers[0]._threads) == 2  # preprocessing, inference
        assert engine.predict("doubler", [1.0, 2.0]) == [2.0, 4.0]
        # TorchServe's header, as tornado spells it: the pipeline hands it to handle.
        assert engine.predict("doubler", [1.0], headers={"Explain": "True"}) == {"explained": [[1.0]]}


def test_a_whole_batch_preprocess_runs_as_handle(tmp_path):
    with Engine() as engine:
        version = serve(engine, tmp_path, "padder", WHOLE_BATCH)
        assert len(version.workers[0]._threads) == 1
        assert engine.predict("padder", [3.0]) == [6.0]


SLOW_PREPROCESS = '''\
import random
import threading
import time

import torch
from nbserve.handlers.base import BaseHandler, per_request

SEEN = {"threads": set(), "preprocess_sizes": [], "batches": []}


class Slow(BaseHandler):
    """Preprocessing takes a random while, so a pool finishes requests out of order."""

    def initialize(self, context):
        self.model = lambda x: x
        self.initialized = True

    @per_request
    def preprocess(self, data):
        SEEN["threads"].add(threading.current_thread().name)
        SEEN["preprocess_sizes"].append(len(data))
        time.sleep(random.uniform(0, 0.02))
        if data[0]["body"] < 0:
            raise ValueError("negative input")
        return torch.as_tensor([row["body"] for row in data])

    def postprocess(self, data):
        SEEN["batches"].append(data.tolist())
        return data.tolist()


'''

#: The same handler, but its preprocess is not declared per request: batches stay whole.
WHOLE_BATCH_SLOW = SLOW_PREPROCESS.replace("class Slow(", "class WholeBatch(").replace(
    "    @per_request\n", "")


def handler_module(stem):
    import sys
    return next(m for name, m in sys.modules.items()
                if name.startswith("nbserve_archive_") and name.endswith("_" + stem))


@pytest.mark.parametrize("threads", [4, 1])
def test_the_preprocessing_pool_keeps_order_and_each_answer_reaches_its_request(tmp_path,
                                                                              threads):
    """A pool of 4 runs preprocess in parallel; a pool of one steps aside, and the thread
    that takes requests from the queue preprocesses them, beside the forward pass."""
    handler = tmp_path / f"slow{threads}.py"  # a module of its own, and its own SEEN
    handler.write_text(SLOW_PREPROCESS)
    with Engine() as engine:
        version = engine.register(archive("slow", "1.0", str(handler), export_path=tmp_path),
                                  batch_size=8, preprocess_threads=threads)
        loop = version.workers[0].loop
        assert (loop.pool._max_workers if threads > 1 else loop.pool) == (4 if threads > 1
                                                                          else None)
        futures = [engine.submit("slow", {"body": float(i)}) for i in range(200)]
        bad = engine.submit("slow", {"body": -1.0})
        later = [engine.submit("slow", {"body": float(i)}) for i in range(200, 220)]
        answers = [f.result(60).value for f in futures + later]
        assert answers == [float(i) for i in range(220)]  # each its own
        error = bad.exception(60)
        assert error.status == 500 and "negative input" in str(error)  # alone
        seen = handler_module(handler.stem).SEEN
    if threads > 1:
        assert len(seen["threads"]) > 1  # the pool did run in parallel
    else:
        assert seen["threads"] == {loop.dispatcher.name}
    assert set(seen["preprocess_sizes"]) == {1}  # split: one request per preprocess call
    flat = [x for batch in seen["batches"] for x in batch]
    assert flat == sorted(flat)  # in order
    if threads > 1:  # batched (one thread preprocesses slower than this forward pass runs)
        assert max(len(b) for b in seen["batches"]) > 1


def test_a_whole_batch_preprocess_override_is_never_split(tmp_path):
    handler = tmp_path / "whole.py"
    handler.write_text(WHOLE_BATCH_SLOW)
    with Engine() as engine:
        version = engine.register(
            archive("whole", "1.0", str(handler), export_path=tmp_path),
            batch_size=8, preprocess_threads=4)
        assert not hasattr(version.workers[0], "pool")
        futures = [engine.submit("whole", {"body": float(i)}) for i in range(100)]
        assert [f.result(60).value for f in futures] == [float(i) for i in range(100)]
        seen = handler_module("whole").SEEN
    assert max(seen["preprocess_sizes"]) > 1  # whole batches reached its preprocess


ASYNC_HANDLE = '''\
import asyncio

LOOPS = set()


async def handle(data, context):
    """TorchServe's asyncCommunication handlers (its vLLM handler) define handle with async def."""
    if data is None:
        return None
    LOOPS.add(id(asyncio.get_running_loop()))
    await asyncio.sleep(0.01)
    return [{"body": row["body"], "loops": len(LOOPS)} for row in data]
'''


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_an_async_handle_is_awaited_on_one_loop_for_the_workers_life(tmp_path, isolation):
    handler = tmp_path / "waiter.py"
    handler.write_text(ASYNC_HANDLE)
    with Engine() as engine:
        engine.register(archive("waiter", "1.0", str(handler), export_path=tmp_path),
                        isolation=isolation)
        answers = [engine.predict("waiter", n) for n in range(3)]
    assert answers == [{"body": n, "loops": 1} for n in range(3)]
