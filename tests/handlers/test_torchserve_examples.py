"""Handlers that do what TorchServe's own examples do answer as TorchServe 0.12 answers them, on
the same archives and inputs (labels in order, scores within 1e-4)."""

import io
import json
import os
import subprocess
import sys
import threading

import pytest
from PIL import Image, ImageDraw

from tests.support import archives
from tests.support.helpers import assert_same_answer
from tests.support.jupyter_app import free_port

OCTETS = {"Content-Type": "application/octet-stream"}


def digit_png(mode: str = "L") -> bytes:
    """A hand-drawn 7, 28x28, in ``mode``."""
    image = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(image).line([(6, 6), (22, 6), (12, 24)], fill=255, width=3)
    out = io.BytesIO()
    image.convert(mode).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def served(server_factory):
    engine, _, clients = server_factory()
    return engine, clients["inference"]


def test_a_single_channel_handler_gets_the_image_as_decoded(served, torchserve, tmp_path):
    """examples/image_classifier/mnist: its own one-channel transforms get the grayscale digit,
    where nbserve's default handlers would turn it into RGB."""
    engine, client = served
    mar = archives.digits(tmp_path)
    engine.register(mar)
    name = torchserve.register(mar)
    for mode in ("L", "1"):
        status, ours = client.json("PUT", "/predictions/digits", digit_png(mode), OCTETS)
        theirs_status, theirs = torchserve.predict(name, digit_png(mode))
        assert (status, theirs_status) == (200, 200), (ours, theirs)
        assert ours["digit"] == theirs["digit"]
        assert_same_answer(ours, theirs, tolerance=1e-4)
    # Three channels into a one-channel model fail in both, as the handler's own error.
    status, ours = client.json("PUT", "/predictions/digits", digit_png("RGB"), OCTETS)
    assert torchserve.predict(name, digit_png("RGB"))[0] >= 500
    assert status == 500 and "channels" in ours["message"]


def test_the_default_handler_still_takes_a_grayscale_photo(served, classifier_mar):
    """The other side of the rule: image_classifier's own transforms get RGB."""
    engine, client = served
    engine.register(classifier_mar)
    status, answer = client.json("PUT", "/predictions/resnet18", digit_png("L"), OCTETS)
    assert status == 200 and len(answer) == 5


def test_a_handler_that_imports_its_model_by_name(served, torchserve, tmp_path):
    """examples/image_classifier/vgg_16: importlib.import_module("model") in
    _load_pickled_model; and two such archives, each with its own model.py, side by side."""
    engine, client = served
    three = archives.by_name(tmp_path / "three", "three", 3)
    two = archives.by_name(tmp_path / "two", "two", 2)
    engine.register(three)
    engine.register(two)
    body, headers = json.dumps([1.0, 2.0, 3.0, 4.0]), {"Content-Type": "application/json"}
    status, ours = client.json("POST", "/predictions/three", body, headers)
    name = torchserve.register(three)
    theirs = json.loads(torchserve.request("inference", f"predictions/{name}", "POST",
                                           body.encode(), headers)[1])
    assert status == 200 and len(ours) == 3
    assert_same_answer(ours, theirs, tolerance=1e-4)
    status, answer = client.json("POST", "/predictions/two", body, headers)
    assert status == 200 and len(answer) == 2


def test_a_handler_that_replaces_handle_with_micro_batching(served, torchserve, tmp_path, photos):
    """examples/micro_batching: MicroBatching(self) in an __init__ that skips super().__init__(),
    its model-config.yaml settings, and six requests at once."""
    engine, client = served
    mar = archives.micro_batching(tmp_path)
    version = engine.register(mar)
    handler = version.workers[0].entry.instance
    assert handler.handle.micro_batch_size == 2
    assert handler.handle.parallelism == {"preprocess": 2, "inference": 1, "postprocess": 2}
    name = torchserve.register(mar)
    images = [photos["cat.jpg"], photos["astronaut.jpg"], photos["coffee.png"]] * 2
    ours, theirs = [None] * 6, [None] * 6

    def ask(i):
        ours[i] = client.json("PUT", "/predictions/micro", images[i], OCTETS)
        theirs[i] = torchserve.predict(name, images[i])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert max(version.stats.batch_sizes) > 1  # the six came as batches, cut into micro-batches
    for (status, answer), (their_status, their_answer) in zip(ours, theirs):
        assert status == their_status == 200
        assert list(answer) == list(their_answer)
        assert_same_answer(answer, their_answer, tolerance=1e-4)


def test_startup_serves_every_model_that_loads(tmp_path):
    """examples/custom_metrics failed to load here once and took every model down: now the
    others are served, and the one that failed says why, on stderr and over HTTP."""
    store = tmp_path / "store"
    store.mkdir()
    good = archives.controlled(tmp_path / "good")
    broken_handler = tmp_path / "broken.py"
    broken_handler.write_text("raise ImportError('needs a package this machine lacks')\n")
    from nbserve.store.archiver import archive

    broken = archive("broken", "1.0", str(broken_handler), export_path=store)
    ports = {api: free_port() for api in ("inference", "management", "metrics")}
    flags = [f"--{api}-address=http://127.0.0.1:{port}" for api, port in ports.items()]
    process = subprocess.Popen(
        [sys.executable, "-m", "nbserve", "serve", "--disable-token-auth", "--models",
         f"ctl={good}", f"broken={broken}", *flags],
        stderr=subprocess.PIPE, text=True, cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    try:
        while not any("metrics API at" in line for line in lines):
            line = process.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
        log = "".join(lines)
        assert "broken" in log and "needs a package this machine lacks" in log
        from tests.support.helpers import Client

        management = Client(f"http://127.0.0.1:{ports['management']}")
        status, listing = management.json("GET", "/models")
        assert [m["modelName"] for m in listing["models"]] == ["ctl"]
        status, described = management.json("GET", "/models/broken")
        assert status == 500 and described["type"] == "WorkerInitializationException"
        assert "needs a package this machine lacks" in described["message"]
        inference = Client(f"http://127.0.0.1:{ports['inference']}")
        assert inference.json("POST", "/predictions/ctl", b'"x"',
                              {"Content-Type": "application/json"})[0] == 200
    finally:
        process.kill()
        process.wait()
    # Alone, it leaves the server serving nothing, as TorchServe starts without it.
    from tests.support.helpers import nbserve_serve

    alone, ports, said = nbserve_serve("--disable-token-auth", "--ncs", "--models",
                                       f"broken={broken}", cwd=tmp_path)
    try:
        assert any("broken" in line and "failed to load" in line for line in said), said
        management = Client(f"http://127.0.0.1:{ports['management']}")
        assert management.json("GET", "/models") == (200, {"models": []})
    finally:
        alone.kill()
        alone.wait()
