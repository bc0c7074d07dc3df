"""The metrics API: Prometheus text with TorchServe's names, counting what was served."""

import re

from tests.support.archives import controlled


def test_metrics_count_requests_errors_and_batches(server_factory, tmp_path):
    engine, _, clients = server_factory()
    engine.register(controlled(tmp_path), batch_size=4)
    for body in ("a", "b", "boom"):
        clients["inference"].call("POST", "/predictions/ctl", body, {"Content-Type": "text/plain"})
    status, headers, raw = clients["metrics"].call("GET", "/metrics")
    text = raw.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    labels = r'\{model_name="ctl",model_version="1.0",hostname="[^"]+"'
    assert re.search(rf"^ts_inference_requests_total{labels}}} 3$", text, re.M)
    assert re.search(rf"^ts_inference_latency_microseconds{labels}}} [0-9.]+$", text, re.M)
    assert re.search(rf"^ts_queue_latency_microseconds{labels}}} [0-9.]+$", text, re.M)
    assert re.search(rf'^nbserve_errors_total{labels},code="500"}} 1$', text, re.M)
    assert re.search(rf'^nbserve_request_latency_milliseconds{labels},quantile="0.99"}} ', text, re.M)
    assert re.search(rf"^nbserve_workers{labels}}} 1$", text, re.M)
    assert "# TYPE ts_inference_requests_total counter" in text
