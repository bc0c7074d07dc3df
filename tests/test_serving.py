"""``nbserve serve`` as a user runs it: a real process, config.properties, curl, SIGTERM."""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from archives import controlled


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS")).split()[1])


@pytest.fixture
def serving(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
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
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "nbserve", "serve", "--ts-config", str(config), "--ncs",
         "--models", "ctl=ctl.mar"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    while not any("metrics API at" in line for line in lines):
        line = process.stderr.readline()
        assert line, f"nbserve serve exited: {''.join(lines)}"
        lines.append(line)
    yield process, ports, "".join(lines)
    if process.poll() is None:
        process.kill()
        process.wait()


def request(port, method, path, body=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    return response.status, response.read()


def test_serves_the_models_and_warns_of_unknown_keys(serving):
    process, ports, log = serving
    assert "unknown config.properties key 'frobnicate'" in log
    assert "number_of_netty_threads" not in log
    status, body = request(ports["management"], "GET", "/models/ctl")
    described = json.loads(body)[0]
    assert (described["batchSize"], described["maxBatchDelay"]) == (2, 5)
    status, body = request(ports["inference"], "PUT", "/predictions/ctl", b"hi",
                           {"Content-Type": "text/plain"})
    assert status == 200 and json.loads(body)["echo"] == "hi"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_and_a_64_mb_body_refused_without_the_server_growing(serving, tmp_path):
    process, ports, _ = serving
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(64 * 2**20)
    before = rss_kib(process.pid)
    result = subprocess.run(["curl", "-s", "-w", "\\n%{http_code}", "-T", str(big),
                             f"http://127.0.0.1:{ports['inference']}/predictions/ctl"],
                            capture_output=True, text=True, timeout=60)
    body, _, code = result.stdout.rpartition("\n")
    assert code == "413" and json.loads(body)["type"] == "RequestEntityTooLargeException"
    assert rss_kib(process.pid) - before < 16 * 1024
    result = subprocess.run(["curl", "-s", f"http://127.0.0.1:{ports['inference']}/ping"],
                            capture_output=True, text=True, timeout=30)
    assert json.loads(result.stdout) == {"status": "Healthy"}


def test_sigterm_answers_what_is_in_flight_then_exits(serving):
    process, ports, _ = serving
    answers = []

    def slow():
        answers.append(request(ports["inference"], "POST", "/predictions/ctl",
                               json.dumps({"sleep": 1.5}), {"Content-Type": "application/json"}))

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    thread.join(timeout=30)
    assert answers and answers[0][0] == 200
    assert process.wait(timeout=30) == 0
