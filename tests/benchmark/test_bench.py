"""``nbserve bench`` and ``%bench``: benchmark-ab's figures, checked against an independent
closed-loop client on the same servers (nbserve, and TorchServe 0.12 through ``--address``)."""

import csv
import json
import subprocess
import sys
import threading
import time

import pytest

from nbserve.benchmark.load import CSV_COLUMNS
from nbserve.serving.engine import Engine
from tests.support.archives import controlled
from tests.support.helpers import start_server
from tests.support.kernel import Kernel, html, text

#: The controlled handler sleeps 20 ms a batch: a server whose speed is known and steady.
SLEEPY = json.dumps({"sleep": 0.02}).encode()


def independent_throughput(url: str, body: bytes, clients: int, requests: int,
                           key: str | None = None, content_type="application/json") -> float:
    """Requests a second from ``clients`` closed-loop threads, written here for the check."""
    import http.client
    from urllib.parse import urlsplit

    parts, left, lock = urlsplit(url), [requests], threading.Lock()
    headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {key}"} if key else {})}

    def client():
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        while True:
            with lock:
                if not left[0]:
                    return
                left[0] -= 1
            connection.request("POST", parts.path, body, headers)
            response = connection.getresponse()
            response.read()
            assert response.status == 200

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return requests / (time.monotonic() - started)


def bench(*args, cwd):
    run = subprocess.run([sys.executable, "-m", "nbserve", "bench", *args], cwd=cwd,
                         capture_output=True, text=True, timeout=600)
    return run


def report(folder) -> dict:
    with open(folder / "benchmark" / "ab_report.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    return rows[0]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """ctl served over HTTP by nbserve, with tokens on."""
    folder = tmp_path_factory.mktemp("bench")
    engine = Engine()
    engine.register(controlled(folder / "ctl"), batch_size=1)
    server, clients = start_server(engine)
    yield server, clients, folder
    server.stop()
    engine.close()


def test_nbserve_bench_agrees_with_an_independent_client_and_writes_benchmark_abs_csv(served):
    server, _, folder = served
    body = folder / "sleepy.json"
    body.write_bytes(SLEEPY)
    key = server.tokens.keys["inference"]
    run = bench("--address", server.urls["inference"], "--inference-model-url", "predictions/ctl",
                "--input", str(body), "--content-type", "application/json", "--concurrency", "4",
                "--requests", "120", "--key", key, "--report-location", str(folder), cwd=folder)
    assert run.returncode == 0, run.stderr
    row = report(folder)
    measured = float(row["TS throughput"])
    check = independent_throughput(f"{server.urls['inference']}/predictions/ctl", SLEEPY, 4, 120,
                                   key=key)
    assert abs(measured - check) / check < 0.15, (measured, check)
    assert row["Requests"] == "120" and row["TS failed requests"] == "0"
    assert float(row["TS latency P50"]) >= 20  # the handler sleeps 20 ms
    assert (folder / "benchmark" / "predict_latency.png").stat().st_size > 1000


def test_errors_are_counted_by_status(served):
    server, _, folder = served
    body = folder / "ask.json"
    body.write_bytes(json.dumps({"status": 418}).encode())
    run = bench("--address", server.urls["inference"], "--inference-model-url", "predictions/ctl",
                "--input", str(body), "--content-type", "application/json", "--requests", "20",
                "--key", server.tokens.keys["inference"], "--report-location", str(folder),
                cwd=folder)
    assert "20 x 418" in run.stdout, run.stdout + run.stderr
    assert report(folder)["TS failed requests"] == "20"
    assert report(folder)["TS error rate"] == "100.0"
    wrong_key = bench("--address", server.urls["inference"], "--inference-model-url",
                      "predictions/ctl", "--input", str(body), "--requests", "5",
                      "--report-location", str(folder), cwd=folder)
    assert "5 x 400" in wrong_key.stdout and wrong_key.returncode == 1


def test_nbserve_bench_serves_an_archive_itself(tmp_path, classifier_mar, photos):
    image = tmp_path / "cat.jpg"
    image.write_bytes(next(iter(photos.values())))
    run = bench("--url", str(classifier_mar), "--input", str(image), "--concurrency", "2",
                "--requests", "10", "--batch-size", "2", "--batch-delay", "10",
                "--report-location", str(tmp_path), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    row = report(tmp_path)
    assert (row["Batch size"], row["Workers"], row["Requests"]) == ("2", "1", "10")
    assert row["TS failed requests"] == "0" and float(row["Model_p50"]) > 0  # from its metrics


def test_address_measures_torchserve_as_an_independent_client_does(torchserve, tmp_path):
    name = torchserve.register(controlled(tmp_path / "ctl"), batch_size=1)
    body = tmp_path / "sleepy.json"
    body.write_bytes(SLEEPY)
    url = torchserve.url("inference", "")
    run = bench("--address", url, "--inference-model-url", f"predictions/{name}", "--input",
                str(body), "--content-type", "application/json", "--concurrency", "4",
                "--requests", "120", "--report-location", str(tmp_path), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    measured = float(report(tmp_path)["TS throughput"])
    check = independent_throughput(torchserve.url("inference", f"predictions/{name}"), SLEEPY,
                                   4, 120)
    assert abs(measured - check) / check < 0.15, (measured, check)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench-kernel")
    controlled(folder / "ctl")
    (folder / "sleepy.json").write_bytes(SLEEPY)
    with Kernel(folder) as k:
        k.ok("%load_ext nbserve")
        k.ok("%serve ctl/ctl.mar --batch-size 1")
        yield k
        k.run("%serve --stop")


def test_bench_in_a_kernel_returns_its_result_and_shows_a_plot(kernel):
    cell = kernel.ok("result = %bench ctl sleepy.json --content-type application/json "
                     "--concurrency 2 --requests 40\nresult")
    assert "<svg" in html(cell) or "<img" in html(cell)
    assert "40 x 200" in text(cell) and "in-process limit" in text(cell)
    assert kernel.value("result.answered") == 40
    assert kernel.value("result.limit > 0")


def test_bench_sweep_recommends_a_setting_it_measured_that_meets_the_target(kernel):
    started = time.monotonic()
    cell = kernel.ok("sweep = %bench ctl sleepy.json --content-type application/json --sweep "
                     "--batch-sizes 1,4 --workers 1,2 --concurrencies 4 --budget 30 "
                     "--p99-ms 1000\nsweep")
    assert time.monotonic() - started < 60
    measured = kernel.value("[list(k) for k in sweep.results]")
    recommended = kernel.value("list(sweep.recommended)")
    assert recommended in measured and len(measured) >= 2
    assert kernel.value("sweep.results[sweep.recommended].percentile(99)") <= 1000
    shown = text(cell)
    assert "ctl.mar --model-name ctl --batch-size" in shown and "batchSize:" in shown
    kernel.ok("import nbserve.notebook.session")
    served = "nbserve.session.current.engine.get('ctl')"
    assert kernel.value(f"({served}.config.batch_size, len({served}.workers))") == (1, 1)


def test_bench_llm_counts_the_tokens_the_server_generated(chat_model, tmp_path):
    """``nbserve bench --llm`` against a language model served by ``nbserve serve``: every
    token the load counted, the server's GeneratedTokens counted too, and a wrong key is
    counted as failed requests, not tokens."""
    from nbserve.benchmark.generation import COLUMNS, measure
    from tests.support.helpers import nbserve_serve
    from tests.support.llm import generated_tokens

    process, ports, _ = nbserve_serve("--models", f"chat={chat_model}", "--ncs", "--no-grpc",
                                      cwd=tmp_path)
    try:
        key = json.loads((tmp_path / "key_file.json").read_text())["inference"]["key"]
        address = f"http://127.0.0.1:{ports['inference']}"
        before = generated_tokens(ports["metrics"])
        result = measure(f"{address}/v1", "chat", streams=[1, 4], seconds=1.5, key=key)
        assert [r.streams for r in result.results] == [1, 4]
        for level in result.results:
            assert set(level.statuses) == {200} and level.tokens > 0, level
            assert level.ttft_ms and level.itl_ms and level.tokens_per_s > 0
        assert sum(r.tokens for r in result.results) == generated_tokens(ports["metrics"]) - before

        flags = ["--llm", "--address", address, "--inference-model-url", "predictions/chat",
                 "--streams", "2", "--seconds", "1"]
        run = bench(*flags, "--key", key, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        figures = dict(zip(COLUMNS, run.stdout.splitlines()[2].split()))
        assert figures["streams"] == "2" and figures["failed"] == "0", run.stdout
        before = generated_tokens(ports["metrics"])
        refused = bench(*flags, "--key", "wrong", cwd=tmp_path)
        assert refused.returncode == 1
        figures = dict(zip(COLUMNS, refused.stdout.splitlines()[2].split()))
        assert figures["failed"] == figures["requests"] != "0", refused.stdout
        assert generated_tokens(ports["metrics"]) == before  # nothing was generated for them
    finally:
        process.terminate()
        process.wait(30)
