"""The continuous-batching loop (TorchServe's ``continuousBatching: true``) over real HTTP, in
a worker thread and a worker process: each step's parts stream to the client, a request joins
the running ones between steps and leaves when its answer is done."""

import re
import threading
import time

import pytest

from nbserve.serving.engine import Engine
from tests.support.archives import continuous
from tests.support.helpers import start_server


@pytest.fixture(params=["thread", "process"])
def served(request, tmp_path):
    engine = Engine()
    engine.register(continuous(tmp_path), isolation=request.param)
    server, clients = start_server(engine)
    yield engine, clients
    server.stop()
    engine.close()


def words(body: bytes) -> list[tuple[int, int]]:
    """``(words left, requests in that step)`` for each word of an answer."""
    return [(int(left), int(size)) for left, size in re.findall(r"w(\d+)/(\d+)", body.decode())]


def test_each_step_streams_a_part_and_the_last_ends_the_answer(served):
    _, clients = served
    status, headers, body = clients["inference"].call("POST", "/predictions/counting", b"5")
    assert status == 200, body
    assert [left for left, _ in words(body)] == [4, 3, 2, 1, 0]
    assert headers.get("Transfer-Encoding") == "chunked"  # streamed as the steps ran
    assert "ts_stream_next" not in {k.lower() for k in headers}


def test_a_request_joins_the_running_ones_and_leaves_when_done(served):
    """A short request sent while a long one runs joins it between steps (steps of two), and
    is answered long before the long one."""
    _, clients = served
    finished, answers = {}, {}

    def send(name, count):
        answers[name] = clients["inference"].call("POST", "/predictions/counting",
                                                  str(count).encode())
        finished[name] = time.monotonic()

    long = threading.Thread(target=send, args=("long", 40))
    long.start()
    time.sleep(0.5)
    send("short", 3)
    long.join(60)
    assert answers["long"][0] == answers["short"][0] == 200
    assert [size for _, size in words(answers["short"][2])] == [2, 2, 2]
    sizes = [size for _, size in words(answers["long"][2])]
    assert sizes[0] == 1 and 2 in sizes and sizes[-1] == 1
    assert finished["long"] - finished["short"] > 0.5


def test_a_step_that_fails_fails_its_requests_and_the_loop_goes_on(served):
    _, clients = served
    status, _, body = clients["inference"].call("POST", "/predictions/counting", b"-1")
    assert status == 500 and b"a negative count" in body
    status, _, body = clients["inference"].call("POST", "/predictions/counting", b"2")
    assert status == 200 and [left for left, _ in words(body)] == [1, 0]
