"""The jupyter-server extension against a real Jupyter server and kernels it started."""

import base64
import json
import shutil
import time

import pytest

from tests.support import archives, browser
from tests.support.helpers import Client, assert_same_answer
from tests.support.jupyter_app import TOKEN


@pytest.fixture(scope="module")
def kernels(jupyter, classifier_mar):
    """Two kernels: the older serves resnet18 and ctl (tag v1), the newer ctl (tag v2)."""
    root = jupyter.runtime_dir.rsplit("/", 1)[0]
    shutil.copy(classifier_mar, f"{root}/resnet18.mar")
    archives.controlled(__import__("pathlib").Path(root) / "v1", "v1")
    archives.controlled(__import__("pathlib").Path(root) / "v2", "v2")
    older = jupyter.start_kernel()
    older.run("%load_ext nbserve\n%serve resnet18.mar\n%serve v1/ctl.mar")
    newer = jupyter.start_kernel()
    newer.run("%load_ext nbserve\n%serve v2/ctl.mar")
    yield older, newer
    for kernel in (older, newer):
        if jupyter.call("GET", f"api/kernels/{kernel.id}")[0] == 200:
            kernel.shutdown()


def own_client(kernel, api="inference") -> Client:
    """A client of the kernel's own API, holding its key."""
    current = "__import__('nbserve').session.current"
    return Client(kernel.value(f"{current}.server.urls")[api],
                  kernel.value(f"{current}.keys").get(api))


def test_models_and_predictions_through_jupyter_equal_the_kernels_own(jupyter, kernels, photos):
    older, newer = kernels
    status, listing = jupyter.json("GET", "nbserve/models")
    assert status == 200
    assert listing["models"] == [
        {"modelName": "ctl", "modelUrl": "ctl.mar", "kernels": [newer.id, older.id]},
        {"modelName": "resnet18", "modelUrl": "resnet18.mar", "kernels": [older.id]},
    ]
    status, through_jupyter = jupyter.json("PUT", "nbserve/predictions/resnet18", photos["cat.jpg"])
    _, own = own_client(older).json("PUT", "/predictions/resnet18", photos["cat.jpg"])
    assert status == 200 and len(own) == 5
    assert_same_answer(through_jupyter, own)
    _, described = jupyter.json("GET", "nbserve/models/resnet18")
    _, own_description = own_client(older, "management").json("GET", "/models/resnet18")
    assert described[0]["modelName"] == "resnet18"
    # The kernel's own description, field for field (worker start times and memory aside).
    for ours, theirs in zip(described, own_description):
        assert {k: v for k, v in ours.items() if k != "workers"} == \
            {k: v for k, v in theirs.items() if k != "workers"}
        assert [w["id"] for w in ours["workers"]] == [w["id"] for w in theirs["workers"]]
    assert jupyter.json("GET", "nbserve/ping") == (200, {"status": "Healthy"})


def test_a_name_two_kernels_serve_is_answered_by_the_newest_or_the_one_named(jupyter, kernels):
    older, newer = kernels
    body, headers = b'{"x": 1}', {"Content-Type": "application/json"}
    assert jupyter.json("PUT", "nbserve/predictions/ctl", body, headers=headers)[1]["tag"] == "v2"
    named = jupyter.json("PUT", f"nbserve/kernels/{older.id}/predictions/ctl", body, headers=headers)
    assert named[1]["tag"] == "v1"
    status, kernel_list = jupyter.json("GET", "nbserve/kernels")
    assert [k["kernelId"] for k in kernel_list["kernels"]] == [newer.id, older.id]
    assert kernel_list["kernels"][1]["models"] == ["ctl", "resnet18"]


def test_errors_come_back_as_torchserve_json(jupyter, kernels):
    status, body = jupyter.json("PUT", "nbserve/predictions/resnet18", b"not an image")
    assert status == 400 and body["type"] == "BadRequestException" and "image" in body["message"]
    status, body = jupyter.json("GET", "nbserve/models/nope")
    assert status == 404 and "nope" in body["message"]
    status, body = jupyter.json("GET", "nbserve/kernels/no-such-kernel/ping")
    assert status == 404 and "no-such-kernel" in body["message"]


#: Forged XSRF: one made-up value, in tornado's format, as both the cookie and the header,
#: which any script can send.
_FORGED = "2|00000000|6e6273657276652d666f72676564|1700000000"
_FORGED_XSRF = {"Cookie": f"_xsrf={_FORGED}", "X-XSRFToken": _FORGED}


def _kernel_state(kernel) -> dict:
    """What a forwarded request would change in a kernel: its models, workers and requests."""
    return kernel.value(
        "{m.name: {v: [len(mv.workers), mv.stats.requests] for v, mv in m.versions.items()} "
        "for m in __import__('nbserve').session.current.engine.models()}")


def test_no_route_forwards_anything_without_credentials(jupyter, kernels, photos):
    """Every method on every route, kernel-scoped too: without Jupyter's credentials nothing
    reaches a kernel: no model is unregistered, scaled, registered, or run."""
    older, newer = kernels
    root = jupyter.runtime_dir.rsplit("/", 1)[0]
    before = {k.id: _kernel_state(k) for k in kernels}
    paths = ["nbserve/", "nbserve/kernels", "nbserve/models", "nbserve/metrics", "nbserve/ping",
             "nbserve/predictions/resnet18", "nbserve/models/resnet18",
             "nbserve/models/resnet18?min_worker=4&synchronous=true",
             f"nbserve/models?url={root}/resnet18.mar&model_name=intruder&initial_workers=1",
             "nbserve/v1/models/resnet18:predict", "nbserve/v2/models/resnet18/infer"]
    paths += [p.replace("nbserve/", f"nbserve/kernels/{older.id}/", 1)
              for p in paths if p.count("/") > 1 or "?" in p]
    for path in paths:
        for method in ("GET", "PUT", "POST", "DELETE"):
            body = photos["cat.jpg"] if method in ("PUT", "POST") else None
            for token, headers in ((None, {}), ("wrong-token", {}), (None, _FORGED_XSRF)):
                status, _, answer = jupyter.call(method, path, body, token=token, headers=headers)
                assert status in (403, 404, 405), (method, path, token, headers, status)
                assert b"resnet18" not in answer and b"tabby" not in answer
    assert {k.id: _kernel_state(k) for k in kernels} == before
    assert "intruder" not in _kernel_state(older)


HOSTILE_HEADERS_PY = """\
def handle(data, context):
    if data is None:
        return None
    for i in range(len(data)):
        context.set_response_header(i, "Set-Cookie", "_xsrf=planted; Path=/")
        context.set_response_header(i, "Content-Type", "text/html")
        context.set_response_header(i, "Access-Control-Allow-Origin", "*")
        context.set_response_header(i, "X-Custom", "kept")
    return ["<script>alert(1)</script>" for _ in data]
"""


def test_a_handlers_headers_cannot_act_on_jupyters_origin(jupyter, kernels):
    """No cookie, security policy or active content type reaches Jupyter's origin."""
    older, _ = kernels
    root = jupyter.runtime_dir.rsplit("/", 1)[0]
    with open(f"{root}/hostile_headers.py", "w") as f:
        f.write(HOSTILE_HEADERS_PY)
    older.run("%archive --model-name hostile --version 1.0 --handler hostile_headers.py -f\n"
              "%serve hostile.mar")
    status, headers, body = jupyter.call("POST", f"nbserve/kernels/{older.id}/predictions/hostile",
                                         b"x")
    lower = {k.lower(): v for k, v in headers.items()}
    assert status == 200 and body == b"<script>alert(1)</script>"
    assert "planted" not in lower.get("set-cookie", "")
    assert lower["content-type"] == "application/octet-stream"
    assert lower["content-disposition"] == "attachment"
    assert lower["x-content-type-options"] == "nosniff"
    assert lower.get("access-control-allow-origin", "") != "*" and lower["x-custom"] == "kept"
    older.run("%serve --stop hostile")


def test_a_streaming_answer_passes_through_jupyter_unbuffered(jupyter, kernels):
    """The first part reaches the client through the extension long before the last."""
    from pathlib import Path

    from tests.support.helpers import timed_chunks

    older, _ = kernels
    root = Path(jupyter.runtime_dir).parent
    archives.streaming(root / "streaming")
    older.run("%serve streaming/store/streaming.mar")
    status, pieces = timed_chunks(f"{jupyter.url}nbserve/predictions/streaming",
                                  {"Authorization": f"token {TOKEN}"})
    assert status == 200
    assert b"".join(c for _, c in pieces).decode() == "".join(archives.STREAMING_PARTS)
    assert pieces[0][0] < 0.6 < pieces[-1][0]
    older.run("%serve --stop streaming")


def test_the_kernels_secret_never_leaves_the_server(jupyter, kernels):
    older, _ = kernels
    secret = older.value("__import__('nbserve').session.current.server.secret")
    for path in ("nbserve/kernels", "nbserve/models", "nbserve/metrics", "nbserve/"):
        assert secret.encode() not in jupyter.call("GET", path)[2]
    # The kernel's server refuses a wrong secret; with the right one, the Jupyter user may manage.
    management = own_client(older, "management")
    assert management.call("GET", "/models", headers={"X-NBServe-Secret": "guess"})[0] == 403
    assert jupyter.call("DELETE", f"nbserve/kernels/{older.id}/models/ctl")[0] == 200
    assert [m["modelName"] for m in jupyter.json("GET", "nbserve/models")[1]["models"]] == \
        ["ctl", "resnet18"]
    assert jupyter.json("GET", "nbserve/models")[1]["models"][0]["kernels"] == [kernels[1].id]


def test_metrics_are_merged_with_each_kernels_id(jupyter, kernels):
    status, _, text = jupyter.call("GET", "nbserve/metrics")
    text = text.decode()
    assert status == 200
    for kernel in kernels:
        assert f'ts_inference_requests_total{{kernel_id="{kernel.id}",' in text
    assert text.count("# TYPE ts_inference_requests_total counter") == 1


def test_the_page_shows_the_models_and_a_dropped_images_prediction(jupyter, kernels, photos):
    older, _ = kernels
    _, own = own_client(older).json("PUT", "/predictions/resnet18", photos["cat.jpg"])
    with browser.page() as page:
        page.goto(f"{jupyter.url}nbserve/?token={TOKEN}")
        page.wait_for_selector("#models tbody tr")
        assert "resnet18" in page.inner_text("#models")
        page.select_option("#model", "resnet18")
        page.evaluate("""(b64) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "cat.jpg", {type: "image/jpeg"}));
            document.getElementById("drop").dispatchEvent(
                new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }""", base64.b64encode(photos["cat.jpg"]).decode())
        page.wait_for_selector(".result table.scores", timeout=30000)
        shown = page.inner_text(".result")
        browser.screenshot(page, "extension-page.png")
    top_label, top_score = next(iter(own.items()))
    assert top_label in shown and f"{top_score:.4f}" in shown


def test_a_kernel_whose_server_stopped_is_a_clear_503_not_a_hang(jupyter, kernels):
    older, _ = kernels
    older.run("import nbserve\nnbserve.session.current.server.stop()")
    started = time.monotonic()
    status, body = jupyter.json("GET", f"nbserve/kernels/{older.id}/ping")
    assert status == 503 and older.id in body["message"]
    assert time.monotonic() - started < 10


def test_a_kernel_shut_down_disappears_and_a_dead_processs_file_is_cleaned(jupyter, kernels):
    older, newer = kernels
    newer.shutdown()
    kernel_ids = [k["kernelId"] for k in jupyter.json("GET", "nbserve/kernels")[1]["kernels"]]
    assert newer.id not in kernel_ids
    assert jupyter.json("GET", f"nbserve/kernels/{newer.id}/ping")[0] == 404
    stale = __import__("pathlib").Path(jupyter.runtime_dir) / "nbserve-kernel-gone.json"
    stale.write_text(json.dumps({"kernel_id": "gone", "pid": 2**22 + 12345, "urls": {},
                                 "secret": "s", "started": 0}))
    stale.chmod(0o600)  # as a kernel writes it: only such a file is read (and then cleaned)
    jupyter.json("GET", "nbserve/kernels")
    assert not stale.exists()
