"""Metrics handlers add (ts.metrics' API) on the metrics API, with the names, labels and values
TorchServe 0.12's prometheus mode gives the same handler."""

import re

import pytest

from tests.support import archives
from tests.support.jupyter_app import free_port
from tests.support.reference import TorchServe, available

HANDLER_METRICS = ["InferenceRequestCount", "PreprocessCallCount", "InitializeCallCount",
                   "SizeOfImage", "HandlerMethodTime", "PostprocessCallCount",
                   "ExamplePercentMetric_count", "ExamplePercentMetric_sum",
                   "ExamplePercentMetric_bucket"]


def samples(text: str) -> set[tuple[str, frozenset, float]]:
    """The handler's samples: (name, labels but Hostname, value)."""
    found = set()
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z_:][\w:]*)\{(.*?),?\} (\S+)$", line)
        if match and match.group(1) in HANDLER_METRICS:
            labels = frozenset(pair for pair in re.findall(r'(\w+)="([^"]*)"', match.group(2))
                               if pair[0] != "Hostname")
            found.add((match.group(1), labels, float(match.group(3))))
    return found


@pytest.mark.skipif(not available(), reason="TorchServe (torchserve and java) is not installed")
def test_handler_metrics_are_torchserves(server_factory, tmp_path):
    """In a worker process too, where the metric its initialize adds crosses to the server
    before the worker is ready."""
    mar = archives.metered(tmp_path / "made")
    ours = {}
    for isolation in ("thread", "process"):
        engine, _, clients = server_factory()
        engine.register(mar, initial_workers=1, isolation=isolation)
        for _ in range(2):
            assert clients["inference"].json("POST", "/predictions/metered", b"hello")[1] == 5
        ours[isolation] = clients["metrics"].call("GET", "/metrics")[2].decode()
        assert "# TYPE ExamplePercentMetric histogram" in ours[isolation]
        assert ("# HELP SizeOfImage Torchserve prometheus gauge metric with unit: Kilobytes"
                in ours[isolation])

    ports = {api: free_port() for api in ("inference", "management", "metrics")}
    torchserve = TorchServe(tmp_path / "ts", ports, "metrics_mode=prometheus\n"
                                                    "model_metrics_auto_detect=true\n")
    torchserve.start()
    try:
        name = torchserve.register(mar)
        for _ in range(2):
            assert torchserve.predict(name, b"hello") == (200, 5)
        theirs = torchserve.request("metrics", "metrics")[1].decode()
    finally:
        torchserve.stop()
    assert samples(ours["thread"]) == samples(ours["process"]) == samples(theirs)
    assert {name for name, _, _ in samples(ours["process"])} == set(HANDLER_METRICS)


def test_a_metric_used_against_its_declaration_says_so():
    from nbserve.handlers.metrics import HandlerMetrics, MetricsCacheError, MetricTypes

    metrics = HandlerMetrics("m")
    with pytest.raises(MetricsCacheError, match="not declared"):
        metrics.get_metric("Missing", MetricTypes.GAUGE)
    declared = metrics.add_metric_to_cache("Two", "count", ["A", "B"])
    with pytest.raises(MetricsCacheError, match=r"dimensions \['A', 'B'\]"):
        declared.add_or_update(1, ["only one"])


def test_metrics_config_declares_model_metrics_in_advance(server_factory, tmp_path):
    """TorchServe's metrics.yaml: get_metric finds what its model_metrics declare."""
    config = tmp_path / "metrics.yaml"
    config.write_text("model_metrics:\n  gauge:\n    - name: RequestBatchSize\n      unit: count\n"
                      "      dimensions: [\"ModelName\"]\n")
    handler = tmp_path / "batch_size.py"
    handler.write_text("from ts.metrics.metric_type_enum import MetricTypes\n\n"
                       "def handle(data, context):\n    if data is None:\n        return None\n"
                       "    context.metrics.get_metric('RequestBatchSize', MetricTypes.GAUGE)"
                       ".add_or_update(len(data), [context.model_name])\n"
                       "    return [0 for _ in data]\n")
    from nbserve.store.archiver import archive

    engine, _, clients = server_factory(metrics_config=str(config))
    engine.metrics_config = str(config)
    engine.register(archive("sized", "1.0", str(handler), export_path=tmp_path))
    assert clients["inference"].json("POST", "/predictions/sized", b"x")[0] == 200
    text = clients["metrics"].call("GET", "/metrics")[2].decode()
    assert re.search(r'^RequestBatchSize\{ModelName="sized",Hostname="[^"]+"\} 1\.0$', text, re.M)


@pytest.mark.parametrize("isolation", ["thread", "process"])
@pytest.mark.parametrize("auto_detect", [False, True])
def test_with_a_metrics_config_only_what_it_declares_is_exported(server_factory, tmp_path,
                                                                 auto_detect, isolation):
    """As TorchServe: a metric the handler adds that metrics.yaml does not declare is not
    exported (the metrics API, model_metrics.log) unless model_metrics_auto_detect is on."""
    config = tmp_path / "metrics.yaml"
    config.write_text("model_metrics:\n  counter:\n    - name: Declared\n      unit: count\n"
                      "      dimensions: [\"ModelName\", \"Level\"]\n")
    handler = tmp_path / "two.py"
    handler.write_text("def handle(data, context):\n    if data is None:\n        return None\n"
                       "    context.metrics.add_counter('Declared', 1)\n"
                       "    context.metrics.add_counter('Undeclared', 1)\n"
                       "    return [0 for _ in data]\n")
    from nbserve.store.archiver import archive

    engine, _, clients = server_factory(metrics_config=str(config))
    engine.metrics_config, engine.metrics_auto_detect = str(config), auto_detect
    engine.register(archive("two", "1.0", str(handler), export_path=tmp_path),
                    isolation=isolation)
    assert clients["inference"].json("POST", "/predictions/two", b"x")[0] == 200
    text = clients["metrics"].call("GET", "/metrics")[2].decode()
    assert re.search(r'^Declared\{ModelName="two",Level="Model",Hostname="[^"]+"\} 1\.0$', text,
                     re.M)
    assert ("Undeclared{" in text) is auto_detect
