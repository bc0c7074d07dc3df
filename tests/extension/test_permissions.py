"""What Jupyter's authorizer allows through the extension: calling models needs the ``nbserve``
resource; registering, replacing and unregistering run an archive's code in the kernel, so they
need ``execute`` on ``kernels``; the kernel's keys are never rotated through Jupyter; and no
answer reaches Jupyter's origin as a type a browser runs. Each test checks the kernel after."""

import os

import pytest

from tests.support import archives
from tests.support.jupyter_app import Jupyter

AUTHORIZER_PY = '''\
from jupyter_server.auth.authorizer import Authorizer


class ByRole(Authorizer):
    """Everything for the owner; a request marked ``X-Test-Role: models`` may use the nbserve
    resource alone (not kernels, not contents), and ``reader`` may only read it."""

    def is_authorized(self, handler, user, action, resource):
        role = handler.request.headers.get("X-Test-Role")
        if role == "models":
            return resource == "nbserve"
        if role == "reader":
            return resource == "nbserve" and action == "read"
        return True
'''

#: A handler whose module leaves a mark when it is imported: proof that its code ran.
EVIL_PY = '''\
open({marker!r}, "w").close()


def handle(data, context):
    return data
'''

CONTENT_TYPES_PY = '''\
def handle(data, context):
    if data is None:
        return None
    for i, row in enumerate(data):
        context.set_response_header(i, "Content-Type", row.get("body"))  # sent as text/plain
        context.set_response_header(i, "Content-Disposition", "inline")
    return ["<x:script xmlns:x='http://www.w3.org/1999/xhtml'>alert(1)</x:script>" for _ in data]
'''

MODELS = {"X-Test-Role": "models"}
READER = {"X-Test-Role": "reader"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory):
    root = tmp_path_factory.mktemp("permissions")
    runtime = root / ".runtime"
    runtime.mkdir()
    (root / "byrole.py").write_text(AUTHORIZER_PY)
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "NBSERVE_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "nbserve-cache")}
    server = Jupyter(root, str(runtime), env, args=["--ServerApp.authorizer_class=byrole.ByRole"])
    yield server, root
    server.stop()


@pytest.fixture(scope="module")
def kernel(jupyter):
    server, root = jupyter
    archives.controlled(root / "ctl")
    (root / "content_types.py").write_text(CONTENT_TYPES_PY)
    kernel = server.start_kernel()
    kernel.run("%load_ext nbserve\n%serve ctl/ctl.mar\n"
               "%archive --model-name types --version 1.0 --handler content_types.py -f\n"
               "%serve types.mar")
    yield kernel
    kernel.shutdown()


@pytest.fixture
def evil(jupyter, tmp_path):
    """An archive whose code leaves ``marker`` when it loads."""
    marker = tmp_path / "ran"
    (tmp_path / "evil.py").write_text(EVIL_PY.format(marker=str(marker)))
    from nbserve.store.archiver import archive
    return archive("evil", "1.0", str(tmp_path / "evil.py"), export_path=tmp_path), marker


def models_of(kernel) -> list[str]:
    return kernel.value("[m.name for m in __import__('nbserve').session.current.engine.models()]")


def test_a_user_who_may_only_call_models_cannot_run_code_in_the_kernel(jupyter, kernel, evil):
    server, _ = jupyter
    mar, marker = evil
    assert server.call("GET", "api/kernels", headers=MODELS)[0] == 403  # the authorizer holds
    status, _, body = server.call("PUT", f"nbserve/kernels/{kernel.id}/predictions/ctl", b"{}",
                                  headers={**MODELS, **JSON})
    assert status == 200, body
    for method, path in (("POST", f"models?url=file://{mar}&model_name=evil&initial_workers=1"),
                         ("POST", f"models?url=file://{mar}&model_name=ctl&initial_workers=1"),
                         ("DELETE", "models/ctl"), ("DELETE", "models/ctl/1.0")):
        for prefix in (f"nbserve/kernels/{kernel.id}/", "nbserve/"):
            status, _, body = server.call(method, prefix + path, b"", headers=MODELS)
            if prefix == "nbserve/" and method == "POST":  # the merged listing: GET only
                assert status == 405, body
            else:
                assert status == 403 and b"execute on resource: kernels" in body, (prefix, path)
    assert not marker.exists()
    assert models_of(kernel) == ["ctl", "types"]
    assert server.call("PUT", "nbserve/predictions/ctl", b"{}", headers={**MODELS, **JSON})[0] == 200


def test_a_user_who_may_run_code_registers_and_unregisters_through_jupyter(jupyter, kernel, evil):
    server, _ = jupyter
    mar, marker = evil
    status, _, body = server.call(
        "POST", f"nbserve/kernels/{kernel.id}/models?url=file://{mar}&initial_workers=1")
    assert status == 200 and marker.exists(), body
    assert "evil" in models_of(kernel)
    assert server.call("DELETE", f"nbserve/kernels/{kernel.id}/models/evil")[0] == 200
    assert models_of(kernel) == ["ctl", "types"]


@pytest.mark.parametrize("headers", [{}, READER, MODELS], ids=["owner", "reader", "models"])
def test_no_one_rotates_or_reads_the_kernels_keys_through_jupyter(jupyter, kernel, headers):
    """A cross-site GET with the login cookie, a reader, the owner: none replaces a key or
    sees one; the kernel's own /token (with its API key) still works."""
    server, _ = jupyter
    keys = kernel.value("__import__('nbserve').session.current.keys")
    for kind in ("inference", "management"):
        for prefix in (f"nbserve/kernels/{kernel.id}/", "nbserve/"):
            status, _, body = server.call("GET", f"{prefix}token?type={kind}", headers=headers)
            assert status in (403, 404), (kind, prefix, status, body)
            assert all(key.encode() not in body for key in keys.values())
    assert kernel.value("__import__('nbserve').session.current.keys") == keys


@pytest.mark.parametrize("content_type, passes", [
    ("application/rss+xml", False), ("application/atom+xml", False), ("text/xsl", False),
    ("text/plain, text/html", False), ("multipart/x-mixed-replace; boundary=x", False),
    ("text/html", False), ("image/svg+xml", False), ("application/json", True),
    ("text/plain; charset=utf-8", True), ("image/png", True),
])
def test_only_passive_content_types_reach_jupyters_origin(jupyter, kernel, content_type, passes):
    server, _ = jupyter
    status, headers, _ = server.call("PUT", f"nbserve/kernels/{kernel.id}/predictions/types",
                                     content_type.encode(), headers={"Content-Type": "text/plain"})
    lower = {k.lower(): v for k, v in headers.items()}
    assert status == 200
    if passes:
        assert lower["content-type"] == content_type
    else:
        assert lower["content-type"] == "application/octet-stream"
        assert lower["content-disposition"] == "attachment"
    assert lower["x-content-type-options"] == "nosniff"
