"""TorchServe's sequence batching (stateful models) over real HTTP, on two workers of either
isolation: each sequence keeps to one worker and runs in order, and the limits refuse with
TorchServe's 503."""

import json
import threading
import time

import pytest

from nbserve.serving.engine import Engine
from tests.support.archives import stateful
from tests.support.helpers import start_server


@pytest.fixture(params=["thread", "process"])
def served(request, tmp_path):
    engine = Engine()
    engine.register(stateful(tmp_path), isolation=request.param)
    server, clients = start_server(engine)
    yield engine, clients["inference"]
    server.stop()
    engine.close()


def send(client, sequence_id, body, **headers):
    status, answer_headers, answer = client.call(
        "POST", "/predictions/stateful", body.encode(),
        {**({"ts_request_sequence_id": sequence_id} if sequence_id else {}), **headers})
    return status, answer.decode() if isinstance(answer, bytes) else answer


def test_each_sequence_sums_on_one_worker_in_order(served):
    """TorchServe's own test (test_example_stateful_sequence_batching_http): two sequences
    sent at once from two threads sum their own numbers, never each other's."""
    _, client = served
    results = {}

    def run(sequence_id, numbers):
        answers = [send(client, sequence_id, str(n)) for n in numbers]
        assert all(status == 200 for status, _ in answers), answers
        results[sequence_id] = [answer.split() for _, answer in answers]

    threads = [threading.Thread(target=run, args=("seq_0", [1, 3, 5, 7, 9])),
               threading.Thread(target=run, args=("seq_1", [2, 4, 6, 8, 10]))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert [int(a[0]) for a in results["seq_0"]] == [1, 4, 9, 16, 25]
    assert [int(a[0]) for a in results["seq_1"]] == [2, 6, 12, 20, 30]
    for answers in results.values():  # one worker (pid and handler) for the whole sequence
        assert len({(a[1], a[2]) for a in answers}) == 1, answers


def test_a_sequences_requests_never_share_a_batch_and_wait_their_turn(served):
    """Requests of one sequence sent at once run one after another, in order; the limit on
    those waiting refuses the next with TorchServe's 503, and nothing already queued is lost."""
    engine, client = served
    answers = {}

    def run(index, body):
        answers[index] = send(client, "seq_a", body)

    first = threading.Thread(target=run, args=(0, "slow1.5"))
    first.start()
    time.sleep(0.5)
    rest = [threading.Thread(target=run, args=(i, "1")) for i in range(1, 11)]
    for thread in rest:
        thread.start()
        time.sleep(0.02)
    time.sleep(0.2)
    status, refused = send(client, "seq_a", "1")
    for thread in [first, *rest]:
        thread.join(60)
    assert status == 503 and "maxSequenceJobQueueSize" in json.loads(refused)["message"]
    sums = [int(answers[i][1].split()[0]) for i in range(11)]
    assert sorted(sums) == list(range(0, 11)) and all(answers[i][0] == 200 for i in range(11))
    assert all(int(answers[i][1].split()[3]) == 1 for i in range(11))  # batches of one


def test_a_sequence_ends_on_its_end_header_and_starts_again_fresh_ids_without_one(served):
    engine, client = served
    assert send(client, "seq_e", "5")[1].split()[0] == "5"
    assert send(client, "seq_e", "5", ts_request_sequence_end="true")[1].split()[0] == "10"
    deadline = time.monotonic() + 10
    while len(engine.get("stateful").sequences) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(engine.get("stateful").sequences) == 0
    # Without an id, each request is a sequence of its own, which TorchServe names ts-seq-<uuid>.
    assert [send(client, None, "3")[1].split()[0] for _ in range(3)] == ["3", "3", "3"]


def test_more_sequences_than_max_num_sequence_are_refused(tmp_path):
    engine = Engine()
    engine.register(stateful(tmp_path, minWorkers=1, maxWorkers=1, batchSize=1,
                             maxNumSequence=2, sequenceMaxIdleMSec=60000), isolation="thread")
    server, clients = start_server(engine)
    try:
        client = clients["inference"]
        assert send(client, "one", "1")[0] == 200
        assert send(client, "two", "1")[0] == 200
        status, refused = send(client, "three", "1")
        assert status == 503 and "has no worker to serve inference request" in refused
        assert send(client, "one", "1")[1].split()[0] == "2"  # the live ones go on
        described = json.loads(clients["management"].call("GET", "/models/stateful")[2])[0]
        assert (described["stateful"], described["maxNumSequence"],
                described["sequenceMaxIdleMSec"]) == (True, 2, 60000)
    finally:
        server.stop()
        engine.close()
