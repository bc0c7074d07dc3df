"""Limits on what a client sends, over real HTTP: bodies on every route, refused bodies read to
their end so the client sees the answer, connections, idle clients, KServe fan-out. Each test
checks the answer, that the refused bytes were not kept, and that the server still answers."""

import json
import socket
import threading
import time

import pytest
import requests

from tests.support.archives import controlled
from tests.support.helpers import Client

LIMIT = 1 << 20


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS")).split()[1])


def chunks(total: int, size: int = 1 << 16):
    """A chunked body of ``total`` zero bytes, made as it is sent."""
    block = bytes(size)
    for _ in range(total // size):
        yield block


@pytest.fixture
def served(server_factory, tmp_path):
    engine, server, clients = server_factory(max_request_size=LIMIT)
    engine.register(controlled(tmp_path), batch_size=8)
    return engine, server, clients


@pytest.mark.parametrize("api,path", [("inference", "/ping"), ("management", "/models"),
                                      ("metrics", "/metrics"), ("inference", "/no/such/path"),
                                      ("inference", "/predictions/ctl")])
def test_a_chunked_body_over_the_limit_is_refused_on_every_route(served, api, path):
    engine, server, clients = served
    before = rss_kib()
    status, _, body = clients[api].call("POST", path, chunks(64 * LIMIT),
                                        headers={"Transfer-Encoding": "chunked"})
    answer = json.loads(body)
    assert (status, answer["type"]) == (413, "RequestEntityTooLargeException")
    assert "max_request_size" in answer["message"]
    assert rss_kib() - before < 16 * 1024  # 64 MiB sent, none of it kept
    assert engine.get("ctl").stats.requests == 0
    assert clients[api].call("GET", path)[0] in (200, 404, 405)
    assert clients["inference"].json("GET", "/ping") == (200, {"status": "Healthy"})


def test_requests_receives_the_413_for_64_mb_not_a_reset(served):
    """requests sends no Expect: 100-continue: the body is read to its end, then answered."""
    _, server, _ = served
    body = bytes(64 << 20)
    before = rss_kib()
    answer = requests.post(f"{server.urls['inference']}/predictions/ctl", data=body, timeout=60,
                           headers={"Authorization": f"Bearer {server.tokens.keys['inference']}"})
    assert answer.status_code == 413
    assert answer.json()["type"] == "RequestEntityTooLargeException"
    assert rss_kib() - before < 16 * 1024


def test_a_refusal_waits_for_the_body_too(served):
    """An unauthenticated 64 MB upload gets its 400, not a reset."""
    _, server, _ = served
    answer = requests.post(f"{server.urls['inference']}/predictions/ctl", data=bytes(64 << 20),
                           timeout=60)
    assert answer.status_code == 400 and answer.json()["type"] == "InvalidKeyException"


def test_past_the_lingering_bounds_the_answer_goes_at_once(server_factory, tmp_path):
    engine, server, clients = server_factory(max_request_size=LIMIT, lingering_size=4 * LIMIT)
    engine.register(controlled(tmp_path))
    started = time.monotonic()
    try:
        status, _, body = clients["inference"].call(
            "POST", "/predictions/ctl", chunks(1 << 30), headers={"Transfer-Encoding": "chunked"})
        assert status == 413
    except OSError:
        pass  # the server closed while 1 GiB was still coming: a reset is all a client can get
    assert time.monotonic() - started < 10
    assert clients["inference"].json("GET", "/ping")[0] == 200


def test_a_thousand_idle_connections_do_not_stop_a_prediction(server_factory, tmp_path):
    engine, server, clients = server_factory(idle_connection_timeout=2)
    engine.register(controlled(tmp_path))
    inference = clients["inference"]
    idle = [socket.create_connection((inference.host, inference.port)) for _ in range(1000)]
    try:
        status, answer = inference.json("POST", "/predictions/ctl", b'{"x": 1}',
                                        {"Content-Type": "application/json"})
        assert status == 200 and answer["echo"] == {"x": 1}
        time.sleep(3)  # idle_connection_timeout: the server closes them
        for sock in idle[:20]:
            sock.settimeout(5)
            assert sock.recv(1) == b""
    finally:
        for sock in idle:
            sock.close()


def test_a_full_server_makes_room_by_closing_the_longest_idle_connection(server_factory):
    _, server, clients = server_factory(max_connections=5)
    inference = clients["inference"]
    held = [socket.create_connection((inference.host, inference.port)) for _ in range(5)]
    time.sleep(0.2)
    try:
        assert inference.json("GET", "/ping") == (200, {"status": "Healthy"})
        held[0].settimeout(5)
        assert held[0].recv(1) == b""  # the oldest made room
        for sock in held[1:]:
            sock.settimeout(0.1)
            with pytest.raises(TimeoutError):
                sock.recv(1)
    finally:
        for sock in held:
            sock.close()


def test_connections_answering_keyed_requests_are_never_closed_for_another(server_factory,
                                                                          tmp_path):
    """When every connection is answering a request that showed the key, a new one is closed."""
    engine, server, clients = server_factory(max_connections=2)
    engine.register(controlled(tmp_path), batch_size=2)
    inference = clients["inference"]
    answers = []
    slow = [threading.Thread(target=lambda: answers.append(inference.json(
        "POST", "/predictions/ctl", b'{"sleep": 2}', {"Content-Type": "application/json"})))
        for _ in range(2)]
    for thread in slow:
        thread.start()
    time.sleep(0.8)
    extra = socket.create_connection((inference.host, inference.port))
    extra.settimeout(5)
    assert extra.recv(1) == b""
    extra.close()
    for thread in slow:
        thread.join()
    assert [status for status, _ in answers] == [200, 200]


def _flood(inference, count: int) -> list[socket.socket]:
    """``count`` connections that each send the headers of a POST without a key, and no body."""
    flood = []
    for _ in range(count):
        try:
            sock = socket.create_connection((inference.host, inference.port), timeout=5)
            sock.sendall(b"POST /predictions/ctl HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Length: 100\r\n\r\n")
            flood.append(sock)
        except OSError:  # the server closed it to make room: the flood goes on
            pass
    return flood


def test_a_flood_without_the_key_never_locks_out_a_client_with_it(server_factory, tmp_path):
    """The live attack: connections that send a keyless POST's headers and no body fill the
    server. A client with the key is answered within 2 s every time, and each refused request
    is answered 400 within lingering_time and closed, not held to body_timeout."""
    engine, server, clients = server_factory(max_connections=200, lingering_time=2)
    engine.register(controlled(tmp_path))
    inference = clients["inference"]
    flood = _flood(inference, 400)
    try:
        for _ in range(10):
            flood += _flood(inference, 40)
            started = time.monotonic()
            status, answer = inference.json("POST", "/predictions/ctl", b'{"x": 1}',
                                            {"Content-Type": "application/json"})
            assert status == 200 and answer["echo"] == {"x": 1}
            assert time.monotonic() - started < 2
        time.sleep(2.5)  # lingering_time: every refused request has had its answer
        answered = 0
        for sock in flood[-40:]:
            sock.settimeout(5)
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            answered += data.startswith(b"HTTP/1.1 400")
        assert answered >= 30  # the rest were closed earlier, to make room
        assert engine.get("ctl").stats.requests == 10  # the keyless ones reached no model
    finally:
        for sock in flood:
            sock.close()


def test_kserve_instances_are_capped_before_anything_is_queued(served):
    engine, server, clients = served
    body = json.dumps({"instances": [0] * 1001})
    status, answer = clients["inference"].json("POST", "/v1/models/ctl:predict", body)
    assert status == 400 and "max_kserve_instances" in answer["message"]
    inputs = [{"name": f"t{i}", "shape": [1], "datatype": "INT32", "data": [i]} for i in range(1001)]
    status, answer = clients["inference"].json("POST", "/v2/models/ctl/infer",
                                               json.dumps({"inputs": inputs}))
    assert status == 400 and "max_kserve_instances" in answer["message"]
    assert engine.get("ctl").stats.requests == 0
    status, answer = clients["inference"].json("POST", "/v1/models/ctl:predict",
                                               json.dumps({"instances": [0] * 1000}))
    assert status == 200 and len(answer["predictions"]) == 1000
    status, answer = clients["inference"].json("POST", "/v2/models/ctl/infer",
                                               json.dumps({"inputs": inputs[:1000]}))
    assert status == 200 and len(answer["outputs"]) == 1000, answer


def test_a_broken_multipart_body_is_a_400(served):
    _, _, clients = served
    status, answer = clients["inference"].json(
        "POST", "/predictions/ctl", b"--b\r\nno headers, no end",
        {"Content-Type": "multipart/form-data; boundary=b"})
    assert (status, answer["type"]) == (400, "BadRequestException")
    assert clients["inference"].json("GET", "/ping")[0] == 200


def test_answers_never_go_out_as_html(server_factory, tmp_path):
    handler = tmp_path / "texts.py"
    handler.write_text("def handle(data, context):\n"
                       "    return data and ['<script>x</script>' if row.get('body') == b'text'\n"
                       "                     else b'<b>' for row in data]\n")
    from nbserve.store.archiver import archive

    engine, _, clients = server_factory()
    engine.register(archive("texts", "1.0", str(handler), export_path=tmp_path))
    for body, content_type in ((b"text", "text/plain; charset=utf-8"),
                               (b"bytes", "application/octet-stream")):
        status, headers, _ = clients["inference"].call("POST", "/predictions/texts", body)
        assert status == 200 and headers["Content-Type"] == content_type
        assert headers["X-Content-Type-Options"] == "nosniff"


def test_a_non_ascii_secret_is_a_403_not_a_500(served):
    _, server, clients = served
    status, _, body = Client(server.urls["management"]).call(
        "GET", "/models", headers={"X-NBServe-Secret": "é".encode("latin-1")})
    assert status == 403 and json.loads(body)["type"] == "ForbiddenException"


def test_slow_bodies_are_cut_off_after_body_timeout(server_factory, tmp_path):
    engine, server, clients = server_factory(body_timeout=1)
    engine.register(controlled(tmp_path))
    inference = clients["inference"]
    with socket.create_connection((inference.host, inference.port), timeout=10) as sock:
        sock.sendall(b"POST /predictions/ctl HTTP/1.1\r\nHost: localhost\r\n"
                     + f"Authorization: Bearer {inference.key}\r\n".encode()
                     + b"Content-Length: 100\r\n\r\nonly some")
        started = time.monotonic()
        assert sock.recv(1) == b""
        assert time.monotonic() - started < 5
    assert engine.get("ctl").stats.requests == 0
    assert inference.json("GET", "/ping")[0] == 200
