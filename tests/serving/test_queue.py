"""Requests, their queue and the ready buffer: order kept, bounds held, nothing lost at close."""

import threading
import time
from concurrent.futures import Future

import pytest

from nbserve.errors import QueueFull
from nbserve.serving.queue import ReadyBuffer, Request, RequestQueue


def test_a_batch_takes_what_waits_in_order_up_to_its_size():
    queue = RequestQueue(capacity=10, label="m")
    requests = [Request(inputs={"body": i}) for i in range(5)]
    for request in requests:
        queue.put(request)
    stop = threading.Event()
    assert queue.take_batch(3, stop) == requests[:3]
    assert queue.take_batch(3, stop) == requests[3:]


def test_past_capacity_a_request_is_refused_and_nothing_else_changes():
    queue = RequestQueue(capacity=2, label="m")
    queue.put(Request(inputs={}))
    queue.put(Request(inputs={}))
    with pytest.raises(QueueFull):
        queue.put(Request(inputs={}))
    assert len(queue) == 2


def done(value) -> Future:
    future = Future()
    future.set_result(value)
    return future


def test_the_ready_buffer_holds_preprocessing_back_and_hands_over_in_order():
    buffer = ReadyBuffer(capacity=2)
    requests = [Request(inputs={"body": i}) for i in range(3)]
    futures = [done("a"), done("b"), done("c")]
    buffer.put(requests[0], futures[0])
    buffer.put(requests[1], futures[1])
    third = threading.Thread(target=buffer.put, args=(requests[2], futures[2]))
    third.start()
    time.sleep(0.2)
    assert third.is_alive()  # full: preprocessing waits
    assert buffer.take(2) == [(requests[0], futures[0]), (requests[1], futures[1])]
    third.join(5)
    buffer.close()
    assert buffer.take(2) == [(requests[2], futures[2])]
    assert buffer.take(2) is None


def test_the_ready_buffer_hands_over_only_the_ready_front_keeping_arrival_order():
    buffer = ReadyBuffer(capacity=8)
    requests = [Request(inputs={"body": i}) for i in range(3)]
    futures = [Future() for _ in requests]
    for request, future in zip(requests, futures):
        buffer.put(request, future)
    futures[1].set_result("second, ready first")
    taker = threading.Thread(target=lambda: taken.append(buffer.take(3)))
    taken = []
    taker.start()
    time.sleep(0.2)
    assert not taken  # the first is not ready: nothing jumps the line
    futures[0].set_result("first")
    taker.join(5)
    assert taken == [[(requests[0], futures[0]), (requests[1], futures[1])]]
    futures[2].set_exception(ValueError("bad image"))  # a failure is ready too: it fails alone
    assert buffer.take(3) == [(requests[2], futures[2])]