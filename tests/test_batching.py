"""Requests, their queue and the ready buffer: order kept, bounds held, nothing lost at close."""

import threading
import time

import pytest

from nbserve.batching import ReadyBuffer, Request, RequestQueue
from nbserve.errors import QueueFull


def test_a_batch_takes_what_waits_in_order_up_to_its_size():
    queue = RequestQueue(capacity=10, label="m")
    requests = [Request(inputs={"body": i}) for i in range(5)]
    for request in requests:
        queue.put(request)
    stop = threading.Event()
    assert queue.take_batch(3, 0, stop) == requests[:3]
    assert queue.take_batch(3, 0, stop) == requests[3:]


def test_past_capacity_a_request_is_refused_and_nothing_else_changes():
    queue = RequestQueue(capacity=2, label="m")
    queue.put(Request(inputs={}))
    queue.put(Request(inputs={}))
    with pytest.raises(QueueFull):
        queue.put(Request(inputs={}))
    assert len(queue) == 2


def test_the_ready_buffer_holds_preprocessing_back_and_hands_over_in_order():
    buffer = ReadyBuffer(capacity=2)
    requests = [Request(inputs={"body": i}) for i in range(3)]
    buffer.put(requests[0], "a")
    buffer.put(requests[1], "b")
    third = threading.Thread(target=buffer.put, args=(requests[2], "c"))
    third.start()
    time.sleep(0.2)
    assert third.is_alive()  # full: the preprocessing thread waits
    assert buffer.take(2, 0) == [(requests[0], "a"), (requests[1], "b")]
    third.join(5)
    buffer.close()
    assert buffer.take(2, 0) == [(requests[2], "c")]
    assert buffer.take(2, 0) is None
