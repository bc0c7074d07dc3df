"""TorchServe's log files from ``nbserve serve``: access_log.log, model_log.log, ts_log.log,
and with metrics_mode=log (its default) model_metrics.log and ts_metrics.log."""

import json
import re
import time

import pytest

from tests.support.archives import controlled
from tests.support.helpers import Client, nbserve_serve

#: TorchServe's log4j layout for model_log.log and ts_log.log.
LAYOUT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d,\d{3} \[(?P<level>[A-Z]+) *\] (?P<thread>\S+) "
                    r"(?P<logger>\S+) - (?P<message>.*)")


def wait_for_text(path, words, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if all(word in text for word in words):
            return text
        time.sleep(0.1)
    return text


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_serve_writes_torchserves_log_files(tmp_path, isolation):
    mar = controlled(tmp_path / "ctl")
    logs, metrics = tmp_path / "elsewhere", tmp_path / "metrics"
    process, ports, _ = nbserve_serve("--models", f"ctl={mar}", "--isolation", isolation,
                                      cwd=tmp_path, env={"LOG_LOCATION": str(logs),
                                                         "METRICS_LOCATION": str(metrics)})
    try:
        keys = json.loads((tmp_path / "key_file.json").read_text())
        client = Client(f"http://127.0.0.1:{ports['inference']}", keys["inference"]["key"])
        json_body = {"Content-Type": "application/json"}
        assert client.call("POST", "/predictions/ctl", b"{}", json_body)[0] == 200
        assert client.call("POST", "/predictions/ctl", b'"boom"', json_body)[0] == 500
        model_log = wait_for_text(logs / "model_log.log", ["ValueError: boom was asked for"])
        access_log = wait_for_text(logs / "access_log.log", ['"POST /predictions/ctl HTTP/1.1" 500'])
        scraped = Client(f"http://127.0.0.1:{ports['metrics']}").call("GET", "/metrics")[2]
        assert re.search(rb'\nCPUUtilization\{Level="Host",Hostname="[^"]+"\} [\d.]+\n', scraped)
        model_metrics = wait_for_text(metrics / "model_metrics.log", ["PredictionTime"])
        ts_metrics = wait_for_text(metrics / "ts_metrics.log", ["Requests5XX"])
    finally:
        process.terminate()
        process.wait(30)
    # The handler's traceback, in TorchServe's layout; from a worker process, on the thread
    # TorchServe names W-<port>-<model>_<version>-stderr.
    assert "Traceback (most recent call last)" in model_log
    first = LAYOUT.match(model_log.splitlines()[0])
    assert first and first["logger"] == "MODEL_LOG", model_log
    if isolation == "process":
        assert first["thread"].startswith("W-") and first["thread"].endswith("-stderr")
    assert '"POST /predictions/ctl HTTP/1.1" 200' in access_log
    ts_log = (logs / "ts_log.log").read_text()
    assert f"inference API at http://127.0.0.1:{ports['inference']}" in ts_log
    assert "stopping; answering requests in flight" in ts_log
    assert not (tmp_path / "logs").exists()  # LOG_LOCATION moved them
    # TorchServe's metric lines: name.Unit:value|#dimensions|#hostname:h,... (a request id
    # after the time for a handler's metric).
    assert re.search(r" - PredictionTime\.Milliseconds:[\d.]+\|#ModelName:ctl,Level:Model\|"
                     r"#hostname:[^,]+,\d+,", model_metrics), model_metrics
    for line in (r"Requests2XX\.Count:1\|#Level:Host\|#hostname:[^,]+,timestamp:\d+",
                 r"Requests5XX\.Count:1\|#Level:Host",
                 r"ts_inference_requests_total\.Count:1\|#model_name:ctl,model_version:1\.0\|",
                 r"ts_inference_latency_microseconds\.Microseconds:[\d.]+\|#model_name:ctl",
                 # TorchServe's system metrics, taken at start
                 r"CPUUtilization\.Percent:[\d.]+\|#Level:Host\|",
                 r"MemoryUsed\.Megabytes:[\d.]+\|#Level:Host\|",
                 r"DiskAvailable\.Gigabytes:[\d.]+\|#Level:Host\|"):
        assert re.search(line, ts_metrics), (line, ts_metrics)


@pytest.mark.parametrize("mode", ["prometheus", "legacy"])
def test_metrics_modes_other_than_log_write_less_in_the_metrics_logs(tmp_path, mode):
    """As TorchServe: prometheus leaves the files empty; legacy logs all but the
    ts_inference_* counters, which stay on the metrics API."""
    mar = controlled(tmp_path / "ctl")
    (tmp_path / "config.properties").write_text(f"metrics_mode={mode}\n")
    process, ports, _ = nbserve_serve("--models", f"ctl={mar}", "--ts-config",
                                      str(tmp_path / "config.properties"), cwd=tmp_path)
    try:
        keys = json.loads((tmp_path / "key_file.json").read_text())
        client = Client(f"http://127.0.0.1:{ports['inference']}", keys["inference"]["key"])
        assert client.call("POST", "/predictions/ctl", b"{}",
                           {"Content-Type": "application/json"})[0] == 200
        wait_for_text(tmp_path / "logs" / "access_log.log", ["/predictions/ctl"])
        scraped = Client(f"http://127.0.0.1:{ports['metrics']}").call("GET", "/metrics")[2]
        assert b"ts_inference_requests_total{" in scraped
        assert (b"\nCPUUtilization{" in scraped) is (mode != "legacy")  # legacy logs it
    finally:
        process.terminate()
        process.wait(30)
    logs = {p.name: p.read_text() for p in (tmp_path / "logs").glob("*.log")}
    assert sorted(logs) == ["access_log.log", "model_log.log", "model_metrics.log",
                            "ts_log.log", "ts_metrics.log"]  # as TorchServe: there always
    if mode == "prometheus":
        assert logs["model_metrics.log"] == logs["ts_metrics.log"] == ""
    else:
        assert "PredictionTime" in logs["model_metrics.log"]
        assert "Requests2XX" in logs["ts_metrics.log"]
        assert "ts_inference_requests_total" not in logs["ts_metrics.log"]


def test_a_log_location_that_cannot_be_written_is_said_and_served_without(tmp_path):
    """TorchServe serves on without logs it cannot write; so does nbserve serve, saying so.
    (/proc refuses new folders even to root, whom a read-only mode does not stop.)"""
    mar = controlled(tmp_path / "ctl")
    process, ports, said = nbserve_serve("--models", f"ctl={mar}", "--disable-token-auth",
                                         cwd=tmp_path, env={"LOG_LOCATION": "/proc/nbserve-logs"})
    try:
        assert any("/proc/nbserve-logs/ts_log.log cannot be written" in line for line in said)
        client = Client(f"http://127.0.0.1:{ports['inference']}")
        assert client.call("POST", "/predictions/ctl", b"{}",
                           {"Content-Type": "application/json"})[0] == 200
    finally:
        process.terminate()
        process.wait(30)
    assert (tmp_path / "logs" / "model_metrics.log").exists()  # METRICS_LOCATION's default


def test_what_a_handler_logs_at_info_lands_in_model_log(tmp_path):
    """TorchServe's worker logs at INFO, so handlers' logger.info lines reach model_log.log;
    a worker process of nbserve's does the same."""
    from nbserve.store.archiver import archive

    (tmp_path / "chatty.py").write_text(
        "import logging\n\nlogger = logging.getLogger(__name__)\n\n\n"
        "def handle(data, context):\n    if data is None:\n"
        "        logger.info('chatty initialized its model')\n        return None\n"
        "    return [1 for _ in data]\n")
    mar = archive("chatty", "1.0", str(tmp_path / "chatty.py"), export_path=tmp_path)
    process, _, _ = nbserve_serve("--models", f"chatty={mar}", "--ncs", cwd=tmp_path)
    try:
        model_log = wait_for_text(tmp_path / "logs" / "model_log.log",
                                  ["chatty initialized its model"])
    finally:
        process.terminate()
        process.wait(30)
    assert "chatty initialized its model" in model_log
