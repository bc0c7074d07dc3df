"""config.properties, read as TorchServe reads it."""

from nbserve.config import ServerConfig, read_properties


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
    assert config.warnings == ["unknown config.properties key 'mystery' ignored."]
    assert config.metrics_address == "http://127.0.0.1:8082"


def test_allowed_urls():
    config = ServerConfig()
    config.values["allowed_urls"] = r"https://models\.example\.com/.*,file:///srv/.*"
    assert config.allows_url("https://models.example.com/a.mar")
    assert config.allows_url("file:///srv/a.mar")
    assert not config.allows_url("http://evil.example/a.mar")


def test_every_torchserve_key_is_applied_or_named_with_its_reason(tmp_path):
    path = tmp_path / "config.properties"
    path.write_text("ipex_enable=true\nnumber_of_netty_threads=4\nvmargs=-Xmx4g\n"
                    "number_of_gpu=0\nlimit_max_image_pixels=false\n")
    config = ServerConfig.from_properties(path)
    assert [w.split("'")[1] for w in config.warnings] == [
        "ipex_enable", "number_of_netty_threads", "vmargs"]
    assert "nbserve has no Netty" in config.warnings[1]
    assert ServerConfig.from_properties(path).values["grpc_inference_port"] == 7070  # applied
    from nbserve.api.startup import engine_for

    engine = engine_for(config)
    assert engine.defaults.device_type == "cpu" and engine.defaults.gpu_ids == []
    assert engine.defaults.limit_max_image_pixels is False
    engine.close()


def test_settings_read_typed_as_their_defaults_whoever_set_them():
    config = ServerConfig()
    config.values.update(job_queue_size="50", default_response_timeout="30", enable_model_api="true",
                         default_workers_per_model="2", load_models="a.mar,b.mar")
    assert (config.job_queue_size, config.default_response_timeout) == (50, 30.0)
    assert config.enable_model_api is True and config.default_workers_per_model == 2
    assert config.load_models == "a.mar,b.mar"


def test_properties_are_read_and_written_as_java_does(tmp_path):
    """Java's escapes, which TorchServe's snapshots use throughout: a value with ``=``, ``:``
    and newlines comes back as it went, and a file Java wrote reads as Java reads it."""
    from nbserve.config import read_properties, write_properties

    values = {"load_models": "a=a.mar", "model_snapshot": '{\n  "name": "x#!"\n}',
              "inference_address": "http://127.0.0.1:8080", "path": "C:\\models"}
    write_properties(tmp_path / "out.cfg", values, "Saving snapshot")
    assert read_properties(tmp_path / "out.cfg") == values
    (tmp_path / "java.cfg").write_text(
        "#Saving snapshot\nload_models=mnist\\=mnist.mar\nmodels={\\n  \"a\"\\: 1\\n}\n"
        "key\\ with\\ space = value \\\n   continued\nunicode=caf\\u00e9\n")
    assert read_properties(tmp_path / "java.cfg") == {
        "load_models": "mnist=mnist.mar", "models": '{\n  "a": 1\n}',
        "key with space": "value continued", "unicode": "café"}
