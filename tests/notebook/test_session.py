"""The kernel's session: TorchServe's ports, or free ones when another kernel holds them."""

import socket

import pytest

from nbserve.config import ServerConfig
from nbserve.notebook.session import Session
from tests.support.helpers import Client, loopback_config


def holding(port):
    """A socket bound to a loopback port, as another kernel's server would hold it; None if the
    port is already someone else's."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no owner
    try:
        s.bind(("127.0.0.1", port))
        s.listen()
    except OSError:
        s.close()
        return None
    return s


def test_a_default_port_taken_moves_to_a_free_one_and_says_so(classifier_mar):
    held = holding(8080)
    session = Session()
    try:
        notices = session.start(ServerConfig())
        assert any("8080" in n and "inference" in n for n in notices)
        inference = session.server.urls["inference"]
        assert not inference.endswith(":8080")
        session.serve(classifier_mar)
        status, body = Client(inference, session.keys["inference"]).json("GET", "/ping")
        assert status == 200 and body == {"status": "Healthy"}
        assert "resnet18" in str(session.status())
    finally:
        session.stop()
        if held:
            held.close()


def test_a_named_address_taken_is_an_error_that_says_how_to_choose_another():
    held = holding(0)
    port = held.getsockname()[1]
    free = holding(0)
    free_port = free.getsockname()[1]
    free.close()
    config = ServerConfig()
    config.values["inference_address"] = f"http://127.0.0.1:{free_port}"
    config.values["management_address"] = f"http://127.0.0.1:{port}"
    session = Session()
    try:
        with pytest.raises(OSError, match=f"127.0.0.1:{port} is in use.*--management-address"):
            session.start(config)
        assert session.server is None
        unbound = holding(free_port)  # the inference socket bound before the failure was closed
        assert unbound is not None
        unbound.close()
    finally:
        held.close()
        session.stop()


def test_stop_frees_every_port():
    session = Session()
    session.start(ServerConfig())
    ports = [int(url.rsplit(":", 1)[1]) for url in session.server.urls.values()]
    assert session.stop() == "Stopped serving; the ports are free."
    for port in ports:
        s = holding(port)
        assert s is not None, f"port {port} is still bound"
        s.close()
    assert session.stop() == "Nothing is being served."


def test_the_keys_are_the_kernels_own_private_and_gone_when_serving_stops():
    import stat

    session = Session()
    notices = session.start(ServerConfig())
    key_file = session.server.tokens.key_file
    try:
        assert any(str(key_file) in n for n in notices)
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert set(session.keys) == {"management", "inference", "API"}
        management = Client(session.server.urls["management"])
        assert management.call("GET", "/models")[0] == 400
        management.key = session.keys["management"]
        assert management.call("GET", "/models")[0] == 200
    finally:
        session.stop()
    assert not key_file.exists() and session.keys == {}


def test_serve_predict_and_stop_from_python(tmp_path):
    """nbserve.serve / predict / stop: what the magics do, for scripts."""
    import nbserve
    from tests.support import archives

    config = loopback_config()
    try:
        served = nbserve.serve(archives.streaming(tmp_path), config=config)
        assert [v.name for v in served] == ["streaming"]
        assert nbserve.predict("streaming", b"go") == "done"
        assert list(nbserve.predict("streaming", b"go", stream=True)) == archives.STREAMING_PARTS
        import torch

        live = nbserve.serve(torch.nn.Linear(2, 1), model_name="linear", handler="base_handler")
        assert live[0].name == "linear" and len(nbserve.predict("linear", [[1.0, 2.0]])) == 1
    finally:
        assert nbserve.stop() == "Stopped serving; the ports are free."
