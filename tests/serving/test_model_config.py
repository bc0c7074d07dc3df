"""Per-model settings: arguments over model-config.yaml over the machine's defaults, with
TorchServe's names."""

import pytest

from nbserve.errors import BadRequest
from nbserve.serving.model_config import ModelConfig, resolve


def test_model_settings_order_arguments_over_yaml_over_defaults():
    base = ModelConfig(batch_size=8)
    from_yaml = resolve(base, {"batchSize": 4, "maxBatchDelay": 50, "minWorkers": 2})
    assert (from_yaml.batch_size, from_yaml.max_batch_delay, from_yaml.min_workers) == (4, 50, 2)
    assert resolve(base, {"batchSize": 4}, batch_size=16).batch_size == 16
    assert resolve(base, None).batch_size == 8


@pytest.mark.parametrize("overrides, message", [
    ({"batch_size": 0}, "batch_size must be at least 1"),
    ({"min_workers": 3, "max_workers": 1}, "min_workers <= max_workers"),
    ({"response_timeout": -1}, "response_timeout must be positive"),
    ({"batch_size": "many"}, "Invalid value for batch_size"),
])
def test_bad_settings_say_what_is_wrong(overrides, message):
    with pytest.raises(BadRequest, match=message):
        resolve(ModelConfig(), None, **overrides)


def test_frontend_keys_not_applied_are_named(caplog):
    resolve(ModelConfig(), {"useVenv": True, "micro_batching": {"parallelism": {}}})
    assert "'useVenv' is not applied" in caplog.text
    assert "micro_batching" not in caplog.text
