"""OpenTelemetry traces: the span tree of a request, a client's traceparent continued, and the
standard OTEL_* settings sending spans over OTLP/HTTP from ``nbserve serve``."""

import http.server
import json
import threading
import time

import pytest

from tests.support.archives import controlled
from tests.support.helpers import Client, nbserve_serve

OCTETS = {"Content-Type": "application/octet-stream"}
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
ROUTE = "PUT /predictions/{model_name}/{model_version}"


@pytest.fixture(scope="module")
def spans():
    """Every span this process makes, kept in memory (the SDK's own exporter)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(TracerProvider())
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


def traced(trace_id: str, request_id: str) -> dict:
    return {"traceparent": f"00-{trace_id}-{PARENT_ID}-01", "X-Request-ID": request_id}


def tree(found: list, request_id: str) -> tuple[object, dict[str, list]]:
    """The route span of ``request_id`` and its descendants' names by parent name."""
    root = next(s for s in found if s.attributes.get("nbserve.request_id") == request_id)
    names = {s.context.span_id: s.name for s in found}
    children: dict[str, list] = {}
    for span in sorted(found, key=lambda s: s.start_time):
        if span.parent is not None and span.parent.span_id in names \
                and span.context.trace_id == root.context.trace_id:
            children.setdefault(names[span.parent.span_id], []).append(span)
    return root, children


def finished_tree(spans, request_id: str) -> tuple[object, dict[str, list]]:
    """:func:`tree`, once the route span has ended (after the answer was sent)."""
    assert wait_for(lambda: any(s.attributes.get("nbserve.request_id") == request_id
                                for s in spans.get_finished_spans())), request_id
    return tree(spans.get_finished_spans(), request_id)


def wait_for(find, timeout=10.0):
    """``find()``'s first truthy answer; the route span ends after the answer is sent."""
    deadline = time.monotonic() + timeout
    while not (found := find()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def test_a_prediction_is_one_trace_from_the_route_through_its_batch(server_factory,
                                                                     classifier_mar, photos,
                                                                     spans):
    engine, _, clients = server_factory()
    engine.register(classifier_mar, batch_size=4)
    status, headers, _ = clients["inference"].call(
        "PUT", "/predictions/resnet18", photos["cat.jpg"], {**OCTETS, **traced(TRACE_ID, "t-1")})
    assert status == 200 and headers["X-Request-Id"] == "t-1"
    root, children = finished_tree(spans, "t-1")
    assert format(root.context.trace_id, "032x") == TRACE_ID
    assert root.name == ROUTE and root.kind.name == "SERVER"
    assert format(root.parent.span_id, "016x") == PARENT_ID  # the client's trace, continued
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["url.path"] == "/predictions/resnet18"
    assert [s.name for s in children[ROUTE]] == ["queue", "batch"]
    queue, batch = children[ROUTE]
    assert [s.name for s in children["batch"]] == ["preprocess", "inference", "postprocess"]
    assert root.start_time <= queue.start_time <= queue.end_time == batch.start_time
    assert batch.end_time <= root.end_time
    assert batch.attributes["nbserve.model_name"] == "resnet18"
    assert batch.attributes["nbserve.model_version"] == "1.0"
    assert batch.attributes["nbserve.batch_size"] == 1
    assert batch.attributes["nbserve.serving.worker"] == engine.get("resnet18").workers[0].id


def test_each_request_of_a_batch_names_the_batch_it_ran_in(server_factory, tmp_path, spans):
    engine, _, clients = server_factory()
    engine.register(controlled(tmp_path), batch_size=8)
    client = clients["inference"]
    answers = {}

    def ask(n: int, sleep: float) -> None:
        answers[f"b-{n}"] = client.json("POST", "/predictions/ctl", json.dumps({"sleep": sleep}),
                                        {"Content-Type": "application/json",
                                         **traced(f"{n:032x}", f"b-{n}")})[1]

    first = threading.Thread(target=ask, args=(1, 0.5))
    first.start()
    time.sleep(0.2)
    rest = [threading.Thread(target=ask, args=(n, 0)) for n in range(2, 5)]
    for thread in rest:
        thread.start()
    for thread in [first, *rest]:
        thread.join()
    assert sorted(a["batch"] for a in answers.values()) == [1, 3, 3, 3]
    for request_id, answer in answers.items():
        root, children = finished_tree(spans, request_id)
        batch = children[root.name][1]
        assert batch.attributes["nbserve.batch_size"] == answer["batch"]
        assert [s.name for s in children["batch"]] == ["handle"]  # the handler's own handle


def test_a_refused_request_is_traced_with_its_status(server_factory, spans):
    _, _, clients = server_factory()
    keyed = clients["inference"]
    status, _, _ = Client(f"http://{keyed.host}:{keyed.port}").call(
        "PUT", "/predictions/x", b"x", {**OCTETS, **traced("1" * 32, "no-key")})
    assert status == 400
    root = wait_for(lambda: next((s for s in spans.get_finished_spans()
                                  if s.attributes.get("nbserve.request_id") == "no-key"), None))
    assert root.attributes["http.response.status_code"] == 400
    assert not [s for s in spans.get_finished_spans()
                if s.parent is not None and s.parent.span_id == root.context.span_id]


class _Receiver(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP collector: keeps each export request's body."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.exports.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def collector():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.exports = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def exported_spans(collector) -> list[tuple[dict, object]]:
    """``(resource attributes, span)`` for each span the collector received."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    found = []
    for path, body in list(collector.exports):
        assert path == "/v1/traces"
        for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            found += [(resource, span) for scope in resource_spans.scope_spans
                      for span in scope.spans]
    return found


def test_nbserve_serve_exports_over_otlp_from_worker_processes_as_otel_settings_say(
        collector, classifier_mar, photos, tmp_path):
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.server_port}",
           "OTEL_SERVICE_NAME": "nbserve-under-test", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    process, ports, _ = nbserve_serve("--models", f"resnet18={classifier_mar}", cwd=tmp_path,
                                      env=env)
    try:
        keys = json.loads((tmp_path / "key_file.json").read_text())
        client = Client(f"http://127.0.0.1:{ports['inference']}", keys["inference"]["key"])
        status, _, _ = client.call("PUT", "/predictions/resnet18", photos["cat.jpg"],
                                   {**OCTETS, **traced(TRACE_ID, "otlp-1")})
        assert status == 200
        found = wait_for(lambda: [(r, s) for r, s in exported_spans(collector)
                                  if s.trace_id.hex() == TRACE_ID and s.name == "postprocess"])
        assert found, exported_spans(collector)
    finally:
        process.terminate()
        process.wait(30)
    spans = [(r, s) for r, s in exported_spans(collector) if s.trace_id.hex() == TRACE_ID]
    assert {r["service.name"] for r, _ in spans} == {"nbserve-under-test"}
    by_id = {s.span_id: s for _, s in spans}
    names = {s.name: s for _, s in spans}
    root = names[ROUTE]
    assert root.parent_span_id.hex() == PARENT_ID
    parents = {name: by_id[s.parent_span_id].name for name, s in names.items() if name != ROUTE}
    assert parents == {"queue": ROUTE, "batch": ROUTE, "preprocess": "batch",
                       "inference": "batch", "postprocess": "batch"}
    # The steps were timed in the worker process, on the same clock as the route.
    assert root.start_time_unix_nano <= names["preprocess"].start_time_unix_nano
    assert names["postprocess"].end_time_unix_nano <= root.end_time_unix_nano
