"""The inference API over real HTTP on loopback, and its shapes against the real TorchServe."""

import asyncio
import json
import re
import socket
import struct
import threading
import time
import uuid
import zlib

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from tests.support.archives import controlled
from tests.support.helpers import assert_same_answer, metric_samples

OCTETS = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def served(server_factory, classifier_mar, tmp_path):
    engine, server, clients = server_factory()
    engine.register(classifier_mar, batch_size=4)
    engine.register(controlled(tmp_path), batch_size=64)
    return engine, clients["inference"]


def multipart(field: str, data: bytes, content_type="image/jpeg") -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"x\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_ping(served):
    _, client = served
    assert client.json("GET", "/ping") == (200, {"status": "Healthy"})


@pytest.mark.parametrize("method", ["PUT", "POST"])
def test_a_raw_body_is_predicted_as_the_engine_predicts(served, photos, method):
    engine, client = served
    status, headers, body = client.call(method, "/predictions/resnet18", photos["cat.jpg"], OCTETS)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert_same_answer(json.loads(body), engine.predict("resnet18", photos["cat.jpg"]))


@pytest.mark.parametrize("field", ["data", "body"])
def test_multipart_fields_data_and_body(served, photos, field):
    engine, client = served
    body, headers = multipart(field, photos["cat.jpg"])
    status, answer = client.json("POST", "/predictions/resnet18", body, headers)
    assert status == 200
    assert_same_answer(answer, engine.predict("resnet18", photos["cat.jpg"]))


def test_json_and_text_bodies_reach_the_handler_decoded(served):
    _, client = served
    status, answer = client.json("POST", "/predictions/ctl/1.0", json.dumps({"a": [1, 2]}),
                                 {"Content-Type": "application/json"})
    assert (status, answer["echo"]) == (200, {"a": [1, 2]})
    status, answer = client.json("POST", "/predictions/ctl", "héllo".encode(),
                                 {"Content-Type": "text/plain; charset=utf-8"})
    assert answer["echo"] == "héllo"


def test_an_image_sent_as_a_urlencoded_form_is_still_an_image(served, photos):
    """``curl --data-binary @cat.jpg`` sends this content type; TorchServe answers 500."""
    engine, client = served
    status, answer = client.json("POST", "/predictions/resnet18", photos["cat.jpg"],
                                 {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200
    assert_same_answer(answer, engine.predict("resnet18", photos["cat.jpg"]))


@pytest.mark.parametrize("path, body, status, error_type, words", [
    ("/predictions/nope", b"x", 404, "ModelNotFoundException", "Model not found: nope"),
    ("/predictions/resnet18/9.9", b"x", 404, "ModelVersionNotFoundException",
     "Model version: 9.9 does not exist"),
    ("/predictions/resnet18", b"not an image", 400, "BadRequestException", "not an image"),
    ("/predictions/resnet18", b"", 400, "BadRequestException", "empty"),
    ("/predictions/ctl", b"boom", 500, "InternalServerException", "boom was asked for"),
    ("/no/such/path", b"", 404, "ResourceNotFoundException", "not found"),
])
def test_errors_are_torchserve_json(served, path, body, status, error_type, words):
    _, client = served
    got_status, headers, raw = client.call("POST", path, body, {"Content-Type": "text/plain"}
                                           if body == b"boom" else OCTETS)
    answer = json.loads(raw)
    assert (got_status, answer["code"], answer["type"]) == (status, status, error_type)
    assert words in answer["message"]
    assert headers["Content-Type"] == "application/json"


def test_a_truncated_image_is_a_400(served, photos):
    _, client = served
    status, answer = client.json("PUT", "/predictions/resnet18", photos["cat.jpg"][:3000], OCTETS)
    assert (status, answer["type"]) == (400, "BadRequestException")


def test_a_wrong_method_is_a_405(served):
    _, client = served
    status, answer = client.json("DELETE", "/predictions/resnet18")
    assert (status, answer["type"]) == (405, "MethodNotAllowedException")


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_a_900_megapixel_png_is_refused_quickly(served):
    _, client = served
    started = time.monotonic()
    status, answer = client.json("PUT", "/predictions/resnet18", _png_header_only(30000, 30000), OCTETS)
    assert (status, answer["type"]) == (400, "BadRequestException")
    assert "decompression bomb" in answer["message"].lower()
    assert time.monotonic() - started < 5
    assert client.json("GET", "/ping")[0] == 200


def test_an_oversized_body_is_a_413_before_it_is_sent(served):
    """As curl sends a big body: headers with ``Expect: 100-continue``, the body only if asked."""
    import socket

    _, client = served
    with socket.create_connection((client.host, client.port), timeout=10) as sock:
        sock.sendall(b"PUT /predictions/resnet18 HTTP/1.1\r\nHost: localhost\r\n"
                     + f"Authorization: Bearer {client.key}\r\n".encode()
                     + b"Content-Type: application/octet-stream\r\n"
                     b"Content-Length: 67108864\r\nExpect: 100-continue\r\n\r\n")
        response = sock.makefile("rb").read()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert json.loads(body)["type"] == "RequestEntityTooLargeException"


def test_an_oversized_chunked_body_is_a_413(served):
    _, client = served
    chunks = (b"\0" * 2**20 for _ in range(8))  # chunked: no Content-Length to refuse early
    status, _, raw = client.call("PUT", "/predictions/resnet18", chunks,
                                 {**OCTETS, "Transfer-Encoding": "chunked"})
    assert status == 413 and json.loads(raw)["type"] == "RequestEntityTooLargeException"


def test_a_full_queue_is_a_503_with_retry_after(server_factory, tmp_path):
    engine, _, clients = server_factory()
    engine.register(controlled(tmp_path), batch_size=1, job_queue_size=2)
    results = []

    def call():
        results.append(clients["inference"].call(
            "POST", "/predictions/ctl", json.dumps({"sleep": 0.3}), {"Content-Type": "application/json"}))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(status for status, _, _ in results)
    assert statuses.count(200) >= 2 and 503 in statuses
    refused = next(r for r in results if r[0] == 503)
    assert refused[1]["Retry-After"] == "1"
    assert json.loads(refused[2])["type"] == "ServiceUnavailableException"


def test_a_thousand_concurrent_requests_are_all_answered(served):
    _, client = served

    async def flood():
        http = AsyncHTTPClient(force_instance=True, max_clients=1000)
        url = f"http://{client.host}:{client.port}/predictions/ctl"
        requests = [HTTPRequest(url, "POST", body=json.dumps(i), request_timeout=120,
                                connect_timeout=60, headers={"Content-Type": "application/json",
                                                             "Authorization": f"Bearer {client.key}"})
                    for i in range(1000)]
        responses = await asyncio.gather(*(http.fetch(r, raise_error=False) for r in requests))
        http.close()
        return responses

    responses = asyncio.run(flood())
    assert [r.code for r in responses] == [200] * 1000
    assert sorted(json.loads(r.body)["echo"] for r in responses) == list(range(1000))
    assert client.json("GET", "/ping")[0] == 200


def test_kserve_v1_and_v2(served, photos):
    import base64

    engine, client = served
    status, answer = client.json("POST", "/v1/models/ctl:predict",
                                 json.dumps({"instances": [1, {"data": "two"}]}))
    assert status == 200
    assert [p["echo"] for p in answer["predictions"]] == [1, None]
    status, card = client.json("GET", "/v1/models/ctl")  # KServe v1's and OpenAI's fields
    assert status == 200 and card.items() >= {"name": "ctl", "ready": True, "id": "ctl",
                                              "object": "model"}.items()

    image = base64.b64encode(photos["cat.jpg"]).decode()
    request = {"id": "r1", "inputs": [{"name": "cat", "shape": [1], "datatype": "BYTES", "data": [image]}]}
    status, answer = client.json("POST", "/v2/models/resnet18/infer", json.dumps(request))
    assert status == 200 and answer["id"] == "r1" and answer["model_name"] == "resnet18"
    assert_same_answer(answer["outputs"][0]["data"][0], engine.predict("resnet18", photos["cat.jpg"]))
    assert client.json("GET", "/v2/health/live") == (200, {"live": True})
    assert client.json("GET", "/v2/health/ready") == (200, {"ready": True})
    assert client.json("GET", "/v2/models/resnet18/ready")[1]["ready"] is True
    assert client.json("GET", "/v2/models/resnet18")[1]["versions"] == ["1.0"]


def test_the_api_describes_itself(served):
    _, client = served
    for method in ("GET", "OPTIONS"):
        status, answer = client.json(method, "/")
        assert status == 200 and answer["openapi"].startswith("3.")
        from nbserve.api.routes import ROUTES

        assert answer["paths"] == {
            route.openapi: {m.lower(): answer["paths"][route.openapi][m.lower()]
                            for m in route.methods}
            for route in ROUTES if route.api == "inference"}


def test_answers_and_errors_match_torchserve(served, torchserve, classifier_mar, photos):
    engine, client = served
    name = torchserve.register(classifier_mar)
    their_status, their_body = torchserve.request("inference", "ping")
    assert client.json("GET", "/ping") == (their_status, json.loads(their_body))
    ours = client.call("PUT", f"/predictions/{name}", photos["cat.jpg"], OCTETS)
    theirs = torchserve.request("inference", f"predictions/{name}", "PUT", photos["cat.jpg"], OCTETS)
    assert ours[0] == theirs[0] == 200
    assert_same_answer(json.loads(ours[2]), json.loads(theirs[1]))
    for path in ("/predictions/nope", f"/predictions/{name}/9.9"):
        status, headers, raw = client.call("PUT", path, b"x", OCTETS)
        answer = json.loads(raw)
        their_status, their_raw = torchserve.request("inference", path, "PUT", b"x", OCTETS)
        their_answer = json.loads(their_raw)
        # TorchServe's fields, in its order, then the id its X-Request-ID header carries too.
        assert (status, list(answer), answer["type"]) == (
            their_status, [*their_answer, "request_id"], their_answer["type"])
        assert answer["request_id"] == {k.lower(): v for k, v in headers.items()}["x-request-id"]


@pytest.mark.parametrize("kind", ["EPS", "PDF", "ICO"])
def test_only_raster_formats_a_model_takes_are_opened(served, photos, kind):
    """EPS would run Ghostscript where it is installed: it, and every format but JPEG, PNG,
    WebP, BMP, GIF and TIFF, is refused before Pillow opens it."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.open(io.BytesIO(photos["cat.jpg"])).convert("RGB").resize((32, 32)).save(out, format=kind)
    engine, client = served
    status, answer = client.json("PUT", "/predictions/resnet18", out.getvalue(), OCTETS)
    assert status == 400 and "JPEG, PNG, WEBP, BMP, GIF, TIFF" in answer["message"]
    assert client.json("PUT", "/predictions/resnet18", photos["cat.jpg"], OCTETS)[0] == 200


def test_explanations_are_torchserves_integrated_gradients(server_factory, torchserve, tmp_path):
    """POST /explanations/{model} and KServe v1 :explain, against TorchServe on the same
    archive (a one-channel digit classifier: captum's Integrated Gradients, 15 steps)."""
    import io

    from PIL import Image, ImageDraw

    from tests.support import archives

    image = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(image).line([(6, 6), (22, 6), (12, 24)], fill=255, width=3)
    digit = io.BytesIO()
    image.save(digit, format="PNG")
    engine, _, clients = server_factory()
    mar = archives.digits(tmp_path)
    engine.register(mar)
    name = torchserve.register(mar)
    status, ours = clients["inference"].json("POST", "/explanations/digits", digit.getvalue(), OCTETS)
    their_status, raw = torchserve.request("inference", f"explanations/{name}", "POST",
                                           digit.getvalue(), OCTETS)
    assert status == their_status == 200, (ours, raw[:300])
    assert_same_answer(ours, json.loads(raw), tolerance=1e-4)
    assert len(ours) == 1 and len(ours[0]) == 28  # one channel of 28 rows
    status, predicted = clients["inference"].json("POST", "/predictions/digits", digit.getvalue(), OCTETS)
    assert status == 200 and "digit" in predicted  # the same request, not explained
    import base64

    instances = json.dumps({"instances": [{"data": base64.b64encode(digit.getvalue()).decode()}]})
    status, kserve = clients["inference"].json("POST", "/v1/models/digits:explain", instances)
    assert status == 200 and list(kserve) == ["explanations"]
    assert_same_answer(kserve["explanations"][0], ours, tolerance=1e-4)


def test_an_answer_over_max_response_size_is_an_error_not_a_truncation(server_factory, tmp_path):
    engine, _, clients = server_factory(max_response_size=100)
    engine.register(controlled(tmp_path))
    status, answer = clients["inference"].json("POST", "/predictions/ctl", json.dumps("x" * 200),
                                               {"Content-Type": "application/json"})
    assert status == 500 and "max_response_size (100)" in answer["message"]
    assert clients["inference"].json("POST", "/predictions/ctl", b'"short"',
                                     {"Content-Type": "application/json"})[0] == 200


def test_handler_profiling_times_each_step(server_factory, classifier_mar, tmp_path, photos):
    """model-config.yaml's handler: {profile: true}, as in TorchServe: ts_handler_* metrics in
    milliseconds, for the profiled model only, adding up to less than its request took."""
    import zipfile

    profiled = tmp_path / "profiled.mar"
    with zipfile.ZipFile(classifier_mar) as source, zipfile.ZipFile(profiled, "w") as out:
        manifest = json.loads(source.read("MAR-INF/MANIFEST.json"))
        manifest["model"]["configFile"] = "model-config.yaml"
        for item in source.infolist():
            if item.filename != "MAR-INF/MANIFEST.json":
                out.writestr(item, source.read(item))
        out.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
        out.writestr("model-config.yaml", "handler:\n  profile: true\n")
    engine, _, clients = server_factory()
    engine.register(profiled, model_name="profiled")
    engine.register(classifier_mar, model_name="plain")  # the control: the same, unprofiled
    took_ms = {}
    for model in ("profiled", "plain"):
        started = time.perf_counter()
        status = clients["inference"].call("PUT", f"/predictions/{model}", photos["cat.jpg"],
                                           OCTETS)[0]
        took_ms[model] = (time.perf_counter() - started) * 1000
        assert status == 200
    samples = metric_samples(clients["metrics"].call("GET", "/metrics")[2].decode())
    steps = {s.name: s.value for s in samples
             if s.name.startswith("ts_handler_") and s.labels.get("ModelName") == "profiled"}
    assert set(steps) == {"ts_handler_preprocess", "ts_handler_inference",
                          "ts_handler_postprocess"}, steps
    assert all(value > 0 for value in steps.values()), steps
    assert sum(steps.values()) < took_ms["profiled"], (steps, took_ms)
    assert steps["ts_handler_inference"] > steps["ts_handler_postprocess"], steps  # resnet18's pass
    assert not [s for s in samples if s.name.startswith("ts_handler_")
                and s.labels.get("ModelName") == "plain"]


# A handler that writes down each body it is given before it sleeps as long as the body asks.
SEEN_HANDLER = '''\
import json
import os
import time


def handle(data, context):
    if data is None:
        return None
    bodies = [row.get("body") for row in data]
    with open(os.environ["NBSERVE_TEST_SEEN"], "a") as seen:
        seen.writelines(json.dumps(body) + "\\n" for body in bodies)
    time.sleep(max(body.get("sleep", 0) for body in bodies))
    return bodies
'''


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_a_request_whose_client_hung_up_while_it_waited_never_runs(server_factory, tmp_path,
                                                                    monkeypatch, isolation):
    seen_file = tmp_path / "seen.jsonl"
    monkeypatch.setenv("NBSERVE_TEST_SEEN", str(seen_file))
    (tmp_path / "seen.py").write_text(SEEN_HANDLER)
    from nbserve.store.archiver import archive

    mar = archive("seen", "1.0", str(tmp_path / "seen.py"), export_path=tmp_path)
    engine, _, clients = server_factory()
    engine.register(mar, batch_size=1, isolation=isolation)
    client = clients["inference"]
    first = threading.Thread(target=client.call, args=(
        "POST", "/predictions/seen", json.dumps({"n": 0, "sleep": 3}),
        {"Content-Type": "application/json"}))
    first.start()
    deadline = time.monotonic() + 30
    while not (seen_file.exists() and seen_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)  # until the first is in the forward pass
    hung_up = []
    for n in range(1, 6):
        body = json.dumps({"n": n}).encode()
        sock = socket.create_connection((client.host, client.port))
        sock.sendall(b"POST /predictions/seen HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\n"
                     + f"Authorization: Bearer {client.key}\r\n".encode()
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        hung_up.append(sock)
    time.sleep(0.5)
    for sock in hung_up:
        sock.close()
    time.sleep(0.3)
    assert client.json("POST", "/predictions/seen", json.dumps({"n": 6}),
                       {"Content-Type": "application/json"}) == (200, {"n": 6})
    first.join()
    seen = [json.loads(line)["n"] for line in seen_file.read_text().splitlines()]
    # None of them runs: a worker process is sent up to two batches ahead of its forward pass,
    # and what it had been sent before the client hung up is dropped there (the cancel crosses
    # the socket); the rest never leaves the server's queue.
    assert seen == [0, 6], seen
    ahead = 2 - 1 if isolation == "process" else 0
    version = engine.get("seen")
    assert 5 - ahead <= version.queue.abandoned <= 5
    metrics = clients["metrics"].call("GET", "/metrics")[2].decode()
    assert 'nbserve_requests_abandoned_total{model_name="seen",model_version="1.0"' in metrics
    assert re.search(r'nbserve_requests_abandoned_total\{model_name="seen".*\} ' f"{version.queue.abandoned}$",
                     metrics, re.MULTILINE), metrics


def test_every_answer_carries_its_request_id_and_an_error_names_it(served):
    _, client = served
    status, headers, _ = client.call("POST", "/predictions/ctl", b"{}",
                                     {"Content-Type": "application/json", "X-Request-ID": "order-42"})
    assert status == 200 and headers["X-Request-Id"] == "order-42"
    status, headers, raw = client.call("POST", "/predictions/ctl", b'"boom"',
                                       {"Content-Type": "application/json", "X-Request-ID": "o-43"})
    assert status == 500 and headers["X-Request-Id"] == json.loads(raw)["request_id"] == "o-43"
    # An id that could forge a log line or a header is not repeated: the answer gets a new one.
    for sent in ('a" 200 0 forged', "x" * 129):
        status, headers, raw = client.call("PUT", "/predictions/nope", b"x",
                                           {**OCTETS, "X-Request-ID": sent})
        given = headers["X-Request-Id"]
        assert status == 404 and given != sent and uuid.UUID(given)
        assert json.loads(raw)["request_id"] == given
    ids = {client.call("GET", "/ping")[1]["X-Request-Id"] for _ in range(3)}
    assert len(ids) == 3
