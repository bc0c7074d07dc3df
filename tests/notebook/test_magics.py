"""``%archive``, ``%serve`` and ``%predict`` in a real kernel (ipykernel driven by nbclient)."""

import json
import shutil
import socket
import threading
import time
from http.server import HTTPServer, SimpleHTTPRequestHandler

import pytest

from nbserve.serving.engine import Engine
from tests.support import archives
from tests.support.helpers import Client, assert_same_answer, clients_of
from tests.support.kernel import Kernel, error, html, text, traceback, usage_error


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, classifier_mar, photos):
    d = tmp_path_factory.mktemp("notebook")
    (d / "store").mkdir()
    shutil.copy(classifier_mar, d / "store")
    for name in ("model.py", "resnet18.pth", "index_to_name.json"):
        shutil.copy(classifier_mar.parent.parent / name, d / name)
    for name, data in photos.items():
        (d / name).write_bytes(data)
    archives.controlled(d / "ctl_v1", "v1")
    archives.controlled(d / "ctl_v2", "v2")
    return d


@pytest.fixture(scope="module")
def kernel(workdir, tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "nbserve-cache"
    with Kernel(workdir, env={"NBSERVE_CACHE_DIR": str(cache)}) as k:
        k.ok("%load_ext nbserve\nimport nbserve")
        yield k
        k.run("%serve --stop")


def predicted(kernel, args: str):
    """The value ``%predict ARGS`` returns in the kernel, here."""
    kernel.ok(f"_answer = %predict {args}")
    return kernel.value("_answer if isinstance(_answer, str) else dict(_answer)")


def clients(kernel) -> dict[str, Client]:
    """A client of each of the kernel's APIs, holding its key."""
    return clients_of(kernel.value("nbserve.session.current.server.urls"),
                      kernel.value("nbserve.session.current.keys"))


def test_archive_returns_the_path_of_an_archive_torchserve_serves(kernel, workdir, torchserve,
                                                                   photos):
    cell = kernel.ok("path = %archive --model-name tiny_resnet --version 2.0 --model-file model.py "
                     "--serialized-file resnet18.pth --extra-files index_to_name.json "
                     "--handler image_classifier --export-path made -f\npath")
    assert "made/tiny_resnet.mar" in text(cell)
    made = workdir / "made" / "tiny_resnet.mar"
    status, theirs = torchserve.predict(torchserve.register(made), photos["cat.jpg"])
    assert status == 200, theirs
    with Engine() as engine:
        assert engine.register(made).version == "2.0"
        assert_same_answer(engine.predict("tiny_resnet", photos["cat.jpg"]), theirs)
    assert "missing.pth" in usage_error(kernel.run(
        "%archive --model-name x --version 1 --handler image_classifier --serialized-file missing.pth"))
    help_text = text(kernel.ok("print(get_ipython().find_line_magic('archive').__doc__)"))  # %archive?
    assert "--serialized-file" in help_text and "--export-path" in help_text


def test_serve_an_archive_and_call_it_over_http_while_a_cell_runs(kernel, workdir, photos):
    cell = kernel.ok("%serve store/resnet18.mar")
    assert "Serving resnet18 1.0" in text(cell)
    assert "resnet18" in html(cell) and "<table" in html(cell)
    http = clients(kernel)
    key_file = kernel.value("str(nbserve.session.current.server.tokens.key_file)")
    assert f"the keys are in {key_file}" in text(cell)
    keys = kernel.value("nbserve.session.current.keys")
    assert keys and not any(key in text(cell) + html(cell) for key in keys.values())
    # The status's curl line, run as shown, finds the key itself.
    curl_line = next(line for line in text(cell).splitlines() if line.startswith("!curl"))
    answer = json.loads(text(kernel.ok(curl_line.replace("!curl", "!curl -s").replace(
        "INPUT", "cat.jpg"))))
    assert len(answer) == 5

    busy = threading.Thread(target=kernel.run, args=("import time; time.sleep(4)",))
    started = time.monotonic()
    busy.start()
    time.sleep(0.5)
    status, models = http["management"].json("GET", "/models")
    status_p, answer = http["inference"].json("PUT", "/predictions/resnet18", photos["cat.jpg"])
    answered_after = time.monotonic() - started
    busy.join()
    assert status == 200 and models["models"][0]["modelName"] == "resnet18"
    assert status_p == 200 and len(answer) == 5
    assert answered_after < 3.5, "the HTTP API waited for the busy cell"

    management = http["management"]
    curl = text(kernel.ok(f"!curl -s {management.host}:{management.port}/models "
                          f"-H 'Authorization: Bearer {management.key}'"))
    assert json.loads(curl)["models"][0]["modelName"] == "resnet18"
    refused = text(kernel.ok(f"!curl -s {management.host}:{management.port}/models"))
    assert json.loads(refused)["type"] == "InvalidKeyException"


def test_predict_takes_files_variables_and_urls_and_answers_as_http_does(kernel, workdir, photos):
    http = clients(kernel)
    _, over_http = http["inference"].json("PUT", "/predictions/resnet18", photos["cat.jpg"])

    by_file = kernel.ok("answer = %predict resnet18 cat.jpg\nanswer")
    assert_same_answer(kernel.value("dict(answer)"), over_http)
    assert "<img" in html(by_file) and "nbserve-scores" in html(by_file)
    first_label = next(iter(over_http))
    # Random weights: slivers on the probability's scale, and a line that says why.
    assert first_label in text(by_file) and ("█" in text(by_file) or "▏" in text(by_file))
    assert "Low confidence" in text(by_file)

    kernel.ok("from PIL import Image\nimport io\ndata = open('cat.jpg', 'rb').read()\n"
              "image = Image.open(io.BytesIO(data))")
    assert_same_answer(predicted(kernel, "resnet18 data"), over_http)
    assert_same_answer(predicted(kernel, "resnet18 image"), over_http, tolerance=0.02)

    files = HTTPServer(("127.0.0.1", 0), lambda *a: SimpleHTTPRequestHandler(*a, directory=str(workdir)))
    threading.Thread(target=files.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{files.server_port}/cat.jpg"
        assert_same_answer(predicted(kernel, f"resnet18 {url}"), over_http)
    finally:
        files.shutdown()

    assert "no-such-file.jpg" in usage_error(kernel.run("%predict resnet18 no-such-file.jpg"))
    assert "no_such_model" in usage_error(kernel.run("%predict no_such_model cat.jpg"))
    assert "not an image" in usage_error(kernel.run("%predict resnet18 model.py"))


def test_serve_a_live_module_trained_in_the_notebook(kernel, workdir, photos):
    kernel.ok(
        "import torch, torchvision\n"
        "from nbserve.handlers.image_classifier import ImageClassifier\n"
        "torch.manual_seed(1)\n"
        "net = torchvision.models.mobilenet_v3_small(weights=None, num_classes=10)\n"
        "opt = torch.optim.SGD(net.parameters(), lr=0.1)\n"
        "for _ in range(3):\n"
        "    opt.zero_grad(); net(torch.randn(4, 3, 224, 224)).sum().backward(); opt.step()\n"
        "net.eval()\n"
        "from nbserve.handlers.util import load_label_mapping\n"
        "labels = load_label_mapping('index_to_name.json')\n"
        "def top5(model):  # what the image_classifier handler computes, done by hand\n"
        "    x = ImageClassifier.image_processing(Image.open('cat.jpg').convert('RGB'))[None]\n"
        "    with torch.no_grad():\n"
        "        p = torch.topk(torch.softmax(model(x), 1), 5)\n"
        "    return {labels[str(i)]: v for i, v in zip(p.indices[0].tolist(), p.values[0].tolist())}\n"
    )
    kernel.ok("%serve net --model-name live_net --handler image_classifier "
              "--extra-files index_to_name.json")
    expected = kernel.value("top5(net)")
    assert_same_answer(predicted(kernel, "live_net cat.jpg"), expected)
    _, over_http = clients(kernel)["inference"].json("PUT", "/predictions/live_net", photos["cat.jpg"])
    assert_same_answer(over_http, expected)
    # What is served is a snapshot: training on does not change it until %serve again.
    kernel.ok("with torch.no_grad():\n    net.classifier[-1].bias += 50 * torch.arange(10.0)")
    assert_same_answer(predicted(kernel, "live_net cat.jpg"), expected)
    kernel.ok("%serve net --model-name live_net --handler image_classifier "
              "--extra-files index_to_name.json")
    retrained = predicted(kernel, "live_net cat.jpg")
    assert_same_answer(retrained, kernel.value("top5(net)"))
    assert list(retrained)[0] == kernel.value("labels['9']")


def test_serving_a_name_again_replaces_it_without_dropping_requests(kernel, workdir):
    kernel.ok("%serve ctl_v1/ctl.mar")
    inference = clients(kernel)["inference"]
    answers, stop = [], threading.Event()

    def stream():
        while not stop.is_set():
            status, body = inference.json("PUT", "/predictions/ctl", json.dumps({"sleep": 0.02}),
                                          {"Content-Type": "application/json"})
            answers.append((status, body["tag"] if status == 200 else body))

    threads = [threading.Thread(target=stream) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    kernel.ok("%serve ctl_v2/ctl.mar")
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert all(status == 200 for status, _ in answers), [a for a in answers if a[0] != 200]
    tags = [tag for _, tag in answers]
    assert tags[0] == "v1" and tags[-1] == "v2"
    assert kernel.value("[r['model'] for r in get_ipython().run_line_magic('serve', '').rows]"
                        ".count('ctl')") == 1


def test_a_handler_error_shows_the_handlers_own_traceback(kernel):
    cell = kernel.run("word = 'boom'\n%predict ctl word")
    assert error(cell)["ename"] == "ValueError" and error(cell)["evalue"] == "boom was asked for"
    shown = traceback(cell)
    assert "controlled_v2.py" in shown and 'raise ValueError("boom was asked for")' in shown
    assert "InferenceError" not in shown and "500" not in shown
    kernel.ok("word = 'hello'")
    assert predicted(kernel, "ctl word")["echo"] == "hello"  # and it still serves


def test_bare_serve_shows_a_status_table_in_html_and_text(kernel):
    cell = kernel.ok("%serve")
    plain, rich = text(cell), html(cell)
    for column in ("model", "predictions URL", "device", "workers", "batch size", "queue",
                   "p50 / p99 ms"):
        assert column in plain and column in rich
    assert "resnet18" in plain and "/predictions/resnet18" in rich and "cpu" in plain


def test_upload_widget_predicts_each_uploaded_image_and_reports_bad_files(kernel, photos):
    cell = kernel.ok("w = %predict resnet18\nw")
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in cell.outputs)
    # What the browser's FileUpload sends when two files are chosen: their bytes and metadata.
    kernel.ok(
        "w.upload.set_state({'value': [\n"
        "    {'name': 'cat.jpg', 'type': 'image/jpeg', 'size': len(data),\n"
        "     'content': memoryview(data), 'last_modified': 0},\n"
        "    {'name': 'notes.txt', 'type': 'text/plain', 'size': 5,\n"
        "     'content': memoryview(b'notes'), 'last_modified': 0}]})\n"
        "w.wait(60)")
    rows = kernel.value("[row.value for row in w.results.children]")
    assert len(rows) == 2
    assert "cat.jpg" in rows[0] and "nbserve-scores" in rows[0] and "<img" in rows[0]
    _, over_http = clients(kernel)["inference"].json("PUT", "/predictions/resnet18", photos["cat.jpg"])
    assert next(iter(over_http)) in rows[0]
    assert "notes.txt" in rows[1] and "nbserve-error" in rows[1] and "not an image" in rows[1]


def test_serve_stop_unregisters_a_model_then_frees_the_ports(kernel):
    http = clients(kernel)
    ports = [c.port for c in http.values()]
    kernel.ok("%serve --stop ctl")
    status, models = http["management"].json("GET", "/models")
    assert "ctl" not in [m["modelName"] for m in models["models"]]
    assert "Stopped serving; the ports are free." in text(kernel.ok("%serve --stop"))
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server binds it again
            s.bind(("127.0.0.1", port))
    assert "Nothing is being served" in text(kernel.ok("%serve"))


def test_serve_on_ray_deploys_replicas_that_answer_as_this_kernel_does(ray_cluster, workdir, photos,
                                                                        tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "nbserve-cache"
    with Kernel(workdir, env={"NBSERVE_CACHE_DIR": str(cache)}) as k:
        k.ok("%load_ext nbserve")
        cell = k.ok(f"%serve store/resnet18.mar --model-name onray --on ray --replicas 2 "
                    f"--num-cpus 0 --ray-address {ray_cluster.address} "
                    f"--inference-address {ray_cluster.http_address}")
        url = k.value("__import__('nbserve').session.current.ray.url")
        shown = text(cell)
        assert f"Serving onray 1.0 on Ray (2 replicas, 0 CPU each): {url}/predictions/onray" in shown
        assert "2/2 replicas (HEALTHY)" in shown and "ray: 0 CPU each" in shown
        k.ok("%serve store/resnet18.mar --model-name here")  # the same archive, in the kernel
        on_ray = predicted(k, "onray cat.jpg")
        assert_same_answer(on_ray, predicted(k, "here cat.jpg"))
        keys = k.value("__import__('nbserve').session.current.ray.tokens.keys")
        assert "nbserve-ray-key_file-" in shown and not any(key in shown for key in keys.values())
        client = Client(url, keys["inference"])
        assert_same_answer(client.json("POST", "/predictions/onray", photos["cat.jpg"])[1], on_ray)
        assert "not an image" in usage_error(k.run("bad = b'notes'\n%predict onray bad"))
        assert "Stopped serving onray on Ray." in text(k.ok("%serve --stop onray"))
        assert client.call("POST", "/predictions/onray", photos["cat.jpg"])[0] == 404
        k.ok("%serve --stop")


def test_predict_shows_a_streaming_answers_parts_and_returns_the_whole(kernel, workdir):
    archives.streaming(workdir / "streaming")
    kernel.ok("%serve streaming/store/streaming.mar")
    cell = kernel.ok("go = b'go'\nstreamed = %predict streaming go")
    assert "part 0; part 1; part 2; part 3;" in text(cell)
    assert kernel.value("streamed") == "part 0; part 1; part 2; part 3; done"
    kernel.ok("%serve --stop streaming")


def test_serve_isolation_process_survives_a_segfaulting_handler(kernel, workdir):
    archives.crashing(workdir / "crashing")
    cell = kernel.ok("%serve crashing/store/crashing.mar --isolation process")
    assert "Serving crashing 1.0 (cpu, 1 worker)" in text(cell)
    kernel.ok("ask, crash = b'pid', b'segfault'")
    kernel.ok("_pid = %predict crashing ask")
    pid = kernel.value("_pid")
    assert pid != kernel.value("__import__('os').getpid()")  # a process of its own
    shown = text(kernel.run("%predict crashing crash"))  # a UsageError: no traceback of ours
    assert "UsageError" in shown and "'crashing'" in shown and "died of SIGSEGV" in shown, shown
    assert "Last lines of its stderr:\nhandling pid\nhandling segfault" in shown
    assert kernel.value("1 + 1") == 2  # the kernel, with its state, is still there
    kernel.ok("import time\nfor _ in range(600):\n"
              "    if nbserve.session.current.engine.get('crashing').workers[0].status == 'READY':\n"
              "        break\n    time.sleep(0.1)")
    kernel.ok("_pid = %predict crashing ask")
    assert kernel.value("_pid") not in (pid, None)
    status = text(kernel.ok("%serve"))
    assert "1/1 (1 restarts)" in status and "died of SIGSEGV" in status
    kernel.ok("%serve --stop crashing")
    assert not __import__("os").path.exists(f"/proc/{pid}")
