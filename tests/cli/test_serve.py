"""``nbserve serve`` as a user runs it: a real process, config.properties, curl, SIGTERM."""

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.support.archives import controlled
from tests.support.jupyter_app import free_port


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS")).split()[1])


def start(tmp_path, *flags, config_lines="", env=None):
    """``nbserve serve`` with a config.properties, in ``tmp_path`` (where its key file goes);
    returns the process, its ports and what it printed up to serving."""
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)
    shutil.copy(controlled(tmp_path / "ctl"), store / "ctl.mar")
    ports = {api: free_port() for api in ("inference", "management", "metrics")}
    config = tmp_path / "config.properties"
    config.write_text(
        "# a TorchServe config.properties\n"
        + "".join(f"{api}_address=http://127.0.0.1:{port}\n" for api, port in ports.items())
        + f"model_store={store}\n"
        "number_of_netty_threads=4\n"
        "frobnicate=1\n"
        'models={\\\n  "ctl": {"1.0": {"batchSize": 2, "maxBatchDelay": 5}}\\\n}\n'
        + config_lines
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "nbserve", "serve", "--ts-config", str(config), "--ncs",
         "--models", "ctl=ctl.mar", *flags],
        stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    lines = []
    while not any("metrics API at" in line for line in lines):
        line = process.stderr.readline()
        assert line, f"nbserve serve exited: {''.join(lines)}"
        lines.append(line)
    return process, ports, "".join(lines)


@pytest.fixture
def serving(tmp_path):
    process, ports, log = start(tmp_path)
    keys = {kind: entry["key"] for kind, entry in
            json.loads((tmp_path / "key_file.json").read_text()).items()}
    yield process, ports, log, keys
    if process.poll() is None:
        process.kill()
        process.wait()


def request(port, method, path, body=None, headers=None, key=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = dict(headers or {})
    if key:
        headers["Authorization"] = f"Bearer {key}"
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    return response.status, response.read()


def test_serves_the_models_and_warns_of_unknown_keys(serving):
    process, ports, log, keys = serving
    assert "unknown config.properties key 'frobnicate'" in log
    assert ("'number_of_netty_threads' is not applied: nbserve has no Netty: each API is a "
            "tornado server") in log
    status, body = request(ports["management"], "GET", "/models/ctl", key=keys["management"])
    described = json.loads(body)[0]
    assert (described["batchSize"], described["maxBatchDelay"]) == (2, 5)
    status, body = request(ports["inference"], "PUT", "/predictions/ctl", b"hi",
                           {"Content-Type": "text/plain"}, key=keys["inference"])
    assert status == 200 and json.loads(body)["echo"] == "hi"


def test_tokens_are_on_and_the_key_file_is_private_and_where_it_says(serving, tmp_path):
    import stat

    process, ports, log, keys = serving
    key_file = tmp_path / "key_file.json"
    assert f"the keys are in {key_file}" in log
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    status, body = request(ports["inference"], "PUT", "/predictions/ctl", b"hi",
                           {"Content-Type": "text/plain"})
    answer = json.loads(body)
    assert (status, answer["type"]) == (400, "InvalidKeyException")
    assert not any(key.encode() in body for key in keys.values())


def test_disable_token_auth_turns_tokens_off_and_an_open_address_is_warned_of(tmp_path):
    process, ports, log = start(tmp_path, "--disable-token-auth",
                                "--inference-address", f"http://0.0.0.0:{free_port()}")
    try:
        assert "listens on http://0.0.0.0" in log and "token authorization off" in log
        assert not (tmp_path / "key_file.json").exists()
        assert request(ports["management"], "GET", "/models")[0] == 200
    finally:
        process.kill()
        process.wait()


def test_the_environment_turns_tokens_off_only_where_config_properties_allows(tmp_path):
    off = {"TS_DISABLE_TOKEN_AUTHORIZATION": "true"}
    for allowed, expected in (("false", 400), ("true", 200)):
        workdir = tmp_path / allowed
        workdir.mkdir()
        process, ports, _ = start(workdir, config_lines=f"enable_envvars_config={allowed}\n",
                                  env=off)
        try:
            assert request(ports["management"], "GET", "/models")[0] == expected
        finally:
            process.kill()
            process.wait()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_and_a_64_mb_body_refused_without_the_server_growing(serving, tmp_path):
    process, ports, _, keys = serving
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(64 * 2**20)
    before = rss_kib(process.pid)
    bearer = f"Authorization: Bearer {keys['inference']}"
    result = subprocess.run(["curl", "-s", "-w", "\\n%{http_code}", "-T", str(big), "-H", bearer,
                             f"http://127.0.0.1:{ports['inference']}/predictions/ctl"],
                            capture_output=True, text=True, timeout=60)
    body, _, code = result.stdout.rpartition("\n")
    assert code == "413" and json.loads(body)["type"] == "RequestEntityTooLargeException"
    assert rss_kib(process.pid) - before < 16 * 1024
    result = subprocess.run(["curl", "-s", "-H", bearer, f"http://127.0.0.1:{ports['inference']}/ping"],
                            capture_output=True, text=True, timeout=30)
    assert json.loads(result.stdout) == {"status": "Healthy"}


def test_sigterm_answers_what_is_in_flight_then_exits_removing_the_key_file(serving, tmp_path):
    process, ports, _, keys = serving
    answers = []

    def slow():
        answers.append(request(ports["inference"], "POST", "/predictions/ctl",
                               json.dumps({"sleep": 1.5}), {"Content-Type": "application/json"},
                               key=keys["inference"]))

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    thread.join(timeout=30)
    assert answers and answers[0][0] == 200
    assert process.wait(timeout=30) == 0
    assert not (tmp_path / "key_file.json").exists()


def test_the_models_property_carries_every_field_and_load_models_and_all_load(tmp_path):
    """marName, defaultVersion, maxWorkers, jobQueueSize; load_models; --models all."""
    from nbserve.api.startup import start_serving
    from nbserve.store.archiver import archive
    from tests.support.helpers import Client, loopback_config

    store = tmp_path / "store"
    store.mkdir()
    handler = controlled(tmp_path / "made").parent / "controlled_v1.py"
    archive("ctl", "1.0", str(handler), export_path=store)
    (store / "ctl.mar").rename(store / "ctl-1.mar")
    archive("ctl", "2.0", str(handler), export_path=store)
    config = loopback_config()
    config.values.update(model_store=str(store), disable_token_authorization=True, models=json.dumps({
        "ctl": {"1.0": {"marName": "ctl-1.mar", "maxWorkers": 3, "jobQueueSize": 7},
                "2.0": {"marName": "ctl.mar", "defaultVersion": True}}}))
    engine, server = start_serving(config, [])
    try:
        management = Client(server.urls["management"])
        status, described = management.json("GET", "/models/ctl/all")
        assert [d["modelVersion"] for d in described] == ["1.0", "2.0"]
        assert engine.model("ctl").default_version == "2.0"  # 1.0 loaded first
        assert (described[0]["maxWorkers"], engine.get("ctl", "1.0").config.job_queue_size) == (3, 7)
    finally:
        server.stop(timeout=5)
        engine.close()
    config.values["models"] = None
    for load_models, models, expected in (("ctl.mar", [], ["2.0"]), (None, ["all"], ["1.0", "2.0"]),
                                          # TorchServe's commas; a missing one loads the rest
                                          (None, ["ctl-1.mar,ctl.mar", "gone=gone.mar"],
                                           ["1.0", "2.0"])):
        config.values["load_models"] = load_models
        engine, server = start_serving(config, models)
        try:
            assert sorted(v for m in engine.models() for v in m.versions) == expected
            assert list(engine.failures) == (["gone"] if "gone=gone.mar" in models else [])
        finally:
            server.stop(timeout=5)
            engine.close()


def test_default_workers_per_model_sets_each_models_workers(tmp_path):
    from nbserve.api.startup import start_serving
    from tests.support.helpers import loopback_config

    config = loopback_config()
    config.values.update(disable_token_authorization=True, default_workers_per_model=2)
    engine, server = start_serving(config, [f"ctl={controlled(tmp_path)}"])
    try:
        assert len(engine.get("ctl").workers) == 2
    finally:
        server.stop(timeout=5)
        engine.close()
