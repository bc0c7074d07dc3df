"""Model settings and config.properties, read as TorchServe reads them."""

import pytest

from nbserve.config import ModelConfig, ServerConfig, read_properties, resolve
from nbserve.errors import BadRequest


def test_properties_with_comments_separators_and_continuations(tmp_path):
    path = tmp_path / "config.properties"
    path.write_text("# comment\n! also a comment\ninference_address=http://0.0.0.0:8080\n"
                    "model_store : /models\nenable_model_api=TRUE\njob_queue_size=50\n"
                    "models={\\\n  \"a\": {}\\\n}\nmystery=1\n")
    assert read_properties(path)["models"] == '{"a": {}}'  # continuations lose leading blanks
    config = ServerConfig.from_properties(path)
    assert config.inference_address == "http://0.0.0.0:8080"
    assert config.model_store == "/models"
    assert config.enable_model_api is True and config.job_queue_size == 50
    assert config.model_settings() == {"a": {}}
    assert config.unknown == ["mystery"]
    assert config.metrics_address == "http://127.0.0.1:8082"


def test_allowed_urls():
    config = ServerConfig()
    config.values["allowed_urls"] = r"https://models\.example\.com/.*,file:///srv/.*"
    assert config.allows_url("https://models.example.com/a.mar")
    assert config.allows_url("file:///srv/a.mar")
    assert not config.allows_url("http://evil.example/a.mar")


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
