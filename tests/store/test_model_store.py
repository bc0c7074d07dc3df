"""Registering from a URL over real HTTP: ``..``, redirects, size, time, existing files and
unreachable hosts. Each refusal registers nothing and leaves the store as it was."""

import http.server
import json
import shutil
import socket
import threading
import time

import pytest

from tests.support import archives
from tests.support.helpers import tree


class Files(http.server.BaseHTTPRequestHandler):
    """A loopback web server: /ctl.mar, /redirect (to ``redirect_to``), /slow.mar (trickles),
    /drip.mar (a byte every 2 s, for a minute)."""

    archive = b""
    redirect_to = ""

    def do_GET(self):
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", self.redirect_to)
            self.end_headers()
        elif self.path == "/slow.mar":
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.archive)))
            self.end_headers()
            for i in range(0, len(self.archive), 64):
                self.wfile.write(self.archive[i:i + 64])
                self.wfile.flush()
                time.sleep(0.05)
        elif self.path == "/drip.mar":
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.archive)))
            self.end_headers()
            try:
                for byte in self.archive[:30]:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(2)
            except OSError:  # the server gave up on us, as it should
                pass
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.archive)))
            self.end_headers()
            self.wfile.write(self.archive)

    def log_message(self, *args):
        pass


@pytest.fixture
def web(tmp_path):
    Files.archive = archives.controlled(tmp_path / "made").read_bytes()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def registering(server_factory, tmp_path, web):
    """A server with the model API on, a model store, and only ``web`` allowed."""
    store = tmp_path / "store"
    store.mkdir()

    def make(**settings):
        engine, _, clients = server_factory(
            enable_model_api=True, model_store=str(store),
            allowed_urls=f"{web.replace('.', '[.]')}/.*,file://{store}/.*", **settings)
        return engine, clients["management"], store
    return make


def register(management, url):
    return management.json("POST", f"/models?url={url}&model_name=ctl&initial_workers=1")


def test_a_download_registers(registering, web):
    engine, management, store = registering()
    assert register(management, f"{web}/ctl.mar")[0] == 200
    assert [m.name for m in engine.models()] == ["ctl"] and (store / "ctl.mar").is_file()


def test_dot_dot_is_refused_wherever_it_is(registering, tmp_path):
    """CVE-2024-35198: file:///store/../elsewhere matched file:///store/.*"""
    engine, management, store = registering()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(archives.controlled(tmp_path / "x"), elsewhere / "ctl.mar")
    for url in (f"file://{store}/../elsewhere/ctl.mar", f"file://{store}/%2e%2e/elsewhere/ctl.mar"):
        status, answer = register(management, url)
        assert status == 400 and "Relative path" in answer["message"]
    assert engine.models() == []


def test_a_redirect_is_checked_against_allowed_urls(registering, web):
    engine, management, store = registering()
    Files.redirect_to = "http://localhost:1/ctl.mar"  # not in allowed_urls
    status, answer = register(management, f"{web}/redirect")
    assert status == 400 and "allowed_urls" in answer["message"]
    assert engine.models() == [] and tree(store) == {}


def test_size_and_time_are_capped_and_leave_nothing(registering, web):
    engine, management, store = registering(max_download_size=100)
    status, answer = register(management, f"{web}/ctl.mar")
    assert (status, answer["type"]) == (400, "DownloadArchiveException")
    assert "max_download_size" in answer["message"]
    engine, management, store = registering(download_timeout=0.5)
    started = time.monotonic()
    status, answer = register(management, f"{web}/slow.mar")
    assert (status, answer["type"]) == (400, "DownloadArchiveException")
    assert time.monotonic() - started < 10
    assert engine.models() == [] and tree(store) == {}


def test_download_timeout_holds_against_a_byte_every_two_seconds(registering, web):
    """Each read waits only the time left: two dripping downloads (as many as there are
    download threads) end at download_timeout, and a registration after them goes through."""
    engine, management, store = registering(download_timeout=3)
    started = time.monotonic()
    answers = []
    drips = [threading.Thread(target=lambda: answers.append(register(management, f"{web}/drip.mar")))
             for _ in range(2)]
    for drip in drips:
        drip.start()
    for drip in drips:
        drip.join(30)
    assert time.monotonic() - started < 5, "a download outlived download_timeout"
    assert [(status, a["type"]) for status, a in answers] == [(400, "DownloadArchiveException")] * 2
    assert all("download_timeout" in a["message"] for _, a in answers)
    assert register(management, f"{web}/ctl.mar")[0] == 200
    assert [m.name for m in engine.models()] == ["ctl"] and set(tree(store)) == {"ctl.mar"}


def test_an_archive_in_the_store_is_never_overwritten(registering, web):
    engine, management, store = registering()
    (store / "ctl.mar").write_bytes(b"the user's own archive")
    status, answer = register(management, f"{web}/ctl.mar")
    assert (status, answer["type"]) == (409, "ConflictStatusException")
    assert (store / "ctl.mar").read_bytes() == b"the user's own archive"
    assert engine.models() == []


def test_an_unreachable_url_is_a_400_that_names_no_network_detail(server_factory, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    engine, _, clients = server_factory(enable_model_api=True, model_store=str(tmp_path))
    status, answer = register(clients["management"], f"http://127.0.0.1:{closed}/ctl.mar")
    assert (status, answer["type"]) == (400, "DownloadArchiveException")
    assert "Errno" not in answer["message"] and "refused" not in answer["message"]
    assert json.dumps(answer).count(str(closed)) == 1  # the URL, once
    assert engine.models() == [] and tree(tmp_path) == {}
