"""The metrics API: Prometheus text with TorchServe's names, counting what was served."""

from tests.support.archives import controlled
from tests.support.helpers import metric_families, metric_samples


def test_metrics_count_requests_errors_and_batches(server_factory, tmp_path):
    engine, _, clients = server_factory()
    engine.register(controlled(tmp_path), batch_size=4)
    for body in ("a", "b", "boom"):
        clients["inference"].call("POST", "/predictions/ctl", body, {"Content-Type": "text/plain"})
    status, headers, raw = clients["metrics"].call("GET", "/metrics")
    text = raw.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families, samples = metric_families(text), metric_samples(text)  # well formed, or raises
    ctl = {"model_name": "ctl", "model_version": "1.0"}

    def value(name, **labels):
        found = [s.value for s in samples if s.name == name
                 and {**ctl, **labels}.items() <= s.labels.items()]
        assert len(found) == 1, (name, labels, found)
        return found[0]

    # The parser names a counter family without _total and its samples with it.
    assert families["ts_inference_requests"].type == "counter"
    assert value("ts_inference_requests_total") == 3
    assert value("ts_inference_latency_microseconds_total") > 0
    assert value("ts_queue_latency_microseconds_total") >= 0
    assert value("nbserve_errors_total", code="500") == 1
    assert value("nbserve_workers") == 1
    latency = families["nbserve_request_latency_milliseconds"]
    assert latency.type == "summary"
    assert value("nbserve_request_latency_milliseconds_count") == 3
    p99 = value("nbserve_request_latency_milliseconds", quantile="0.99")
    assert 0 < value("nbserve_request_latency_milliseconds", quantile="0.5") <= p99
    assert value("nbserve_request_latency_milliseconds_sum") >= p99  # three requests, one p99
