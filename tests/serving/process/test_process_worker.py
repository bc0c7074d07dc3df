"""Process workers under ``nbserve serve``: a handler that segfaults, exits, is killed or hangs
takes down only its own process, which is restarted; nothing is left behind at stop."""

import json
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.support.archives import crashing
from tests.support.helpers import Client, nbserve_serve


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``nbserve serve`` (process workers, its default) of two models of the crashing handler:
    ``crashing``, which the tests crash, and ``steady``, which must answer all through."""
    folder = tmp_path_factory.mktemp("process-workers")
    store = folder / "store"
    store.mkdir()
    shutil.copy(crashing(folder / "handler"), store / "crashing.mar")
    shm_before = set(os.listdir("/dev/shm"))
    config = folder / "config.properties"
    config.write_text("default_response_timeout=5\n")  # so a hang is a 408 within seconds
    process, ports, log = nbserve_serve("--ts-config", str(config), "--model-store", str(store),
                                        "--models", "crashing=crashing.mar",
                                        "steady=crashing.mar", cwd=folder)
    keys = {kind: entry["key"] for kind, entry in
            json.loads((folder / "key_file.json").read_text()).items()}
    clients = {api: Client(f"http://127.0.0.1:{port}", keys.get(api)) for api, port in ports.items()}
    yield process, clients, log, shm_before
    if process.poll() is None:
        process.kill()
        process.wait()


def worker_pid(clients, model="crashing") -> int:
    status, _, body = clients["management"].call("GET", f"/models/{model}")
    assert status == 200, body
    (worker,) = json.loads(body)[0]["workers"]
    return worker["pid"]


def restarts(clients) -> int:
    _, _, body = clients["metrics"].call("GET", "/metrics")
    match = re.search(r'nbserve_worker_restarts_total\{model_name="crashing",[^}]*\} (\d+)',
                      body.decode())
    return int(match.group(1))


def answered_after_restart(clients, old_pid: int) -> int:
    """The crashed model's answer once its new process serves: the new process's pid."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, _, body = clients["inference"].call("PUT", "/predictions/crashing", b"pid")
        if status == 200:
            pid = json.loads(body)
            assert pid != old_pid
            return pid
        time.sleep(0.2)
    raise AssertionError(f"the crashed model did not answer again within 60 s {status} {body}")


class Steady:
    """Calls ``steady`` in a loop while something else crashes, recording every status."""

    def __init__(self, clients):
        self.client = clients["inference"]
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            status, _, _ = self.client.call("PUT", "/predictions/steady", b"pid")
            self.statuses.append(status)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def crash(clients, how: str, pid: int):
    """Crash the crashing model's worker ``how``; the crashing request's (status, body)."""
    if how == "SIGKILL":
        os.kill(pid, signal.SIGKILL)
        return None
    status, _, body = clients["inference"].call("PUT", "/predictions/crashing", how.encode())
    return status, json.loads(body)


@pytest.mark.parametrize("how, status, says", [
    ("segfault", 500, "died of SIGSEGV"),
    ("exit", 500, "exited with code 1"),
    ("SIGKILL", None, "died of SIGKILL"),
    ("hang", 408, "response_timeout"),
])
def test_a_crashing_worker_is_restarted_and_nothing_else_notices(server, how, status, says):
    _, clients, log, _ = server
    pid = worker_pid(clients)
    assert os.path.exists(f"/proc/{pid}") and pid != server[0].pid
    before = restarts(clients)
    with Steady(clients) as steady:
        time.sleep(0.3)
        answer = crash(clients, how, pid)
        new_pid = answered_after_restart(clients, pid)
        time.sleep(0.3)
    if answer is not None:
        code, error = answer
        assert code == status, error
        if how != "hang":  # the worker's death, named: model, worker, how
            assert "'crashing'" in error["message"] and says in error["message"], error
            assert "handling " + how in error["message"]  # its last stderr lines
    assert steady.statuses and set(steady.statuses) == {200}, steady.statuses
    assert restarts(clients) == before + 1, (restarts(clients), before, "".join(log[-60:]))
    assert worker_pid(clients) == new_pid
    assert not os.path.exists(f"/proc/{pid}") or _zombie(pid)
    assert any(says in line and "[crashing w" in line for line in log), "".join(log[-20:])


def _zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"


def test_an_answer_of_the_handlers_own_class_fails_alone(server):
    """The worker sends plain data: an object it cannot encode is that request's 500 (as with
    thread workers), and the same worker answers the next request."""
    _, clients, _, _ = server
    pid = worker_pid(clients)
    for _ in range(2):
        status, _, body = clients["inference"].call("PUT", "/predictions/crashing", b"object")
        error = json.loads(body)
        assert status == 500 and "'crashing'" in error["message"], error
        assert "cannot be sent as JSON" in error["message"], error
        status, _, body = clients["inference"].call("PUT", "/predictions/crashing", b"pid")
        assert (status, json.loads(body)) == (200, pid)
    assert worker_pid(clients) == pid


def test_a_message_the_server_cannot_read_names_its_request():
    """What a worker sends is read without importing any class but nbserve's: a payload of
    another class is refused, and the refusal says which request it was for."""
    from multiprocessing.connection import Pipe

    from nbserve.serving.process.messages import Unreadable, receive_message, send_message

    ours, theirs = Pipe()
    send_message(theirs, "answer", "r1", {"ok": [1, 2.5, "x", b"y"]}, 200, {})
    assert receive_message(ours) == ("answer", "r1", ({"ok": [1, 2.5, "x", b"y"]}, 200, {}))
    send_message(theirs, "answer", "r2", Path("/x"), 200, {})
    with pytest.raises(Unreadable) as refused:
        receive_message(ours)
    assert (refused.value.kind, refused.value.request_id) == ("answer", "r2")
    assert "pathlib" in refused.value.reason


def test_stop_leaves_no_process_and_no_shared_memory(server):
    process, clients, log, shm_before = server
    pids = [worker_pid(clients, m) for m in ("crashing", "steady")]
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0, "".join(log[-20:])
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}"), f"worker process {pid} outlived the server"
    assert set(os.listdir("/dev/shm")) <= shm_before



def test_a_package_planted_in_the_working_folder_never_runs(tmp_path, monkeypatch):
    """A ``nbserve/`` folder where the server starts (a clone, a download) is not what its
    worker processes import: they run the installed package."""
    from nbserve.api.startup import engine_for
    from nbserve.config import ServerConfig

    planted = tmp_path / "cwd" / "nbserve"
    planted.mkdir(parents=True)
    marker = tmp_path / "planted-ran"
    (planted / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (planted / "process_worker.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    mar = crashing(tmp_path / "handler")
    monkeypatch.chdir(planted.parent)
    with engine_for(ServerConfig(), isolation="process") as engine:
        engine.register(mar)
        (worker,) = engine.get("crashing").workers
        assert engine.predict("crashing", b"pid") == worker.pid != os.getpid()
    assert not marker.exists()


SLOW_LOAD = '''
import time


def handle(data, context):
    if data is None:  # TorchServe's function handlers are called once with None to load
        time.sleep({seconds})
        return None
    return ["loaded"] * len(data)
'''


@pytest.mark.parametrize("startup_timeout, load_s, loads", [(2, 30, False), (30, 3, True)])
def test_a_worker_process_that_loads_past_startup_timeout_is_killed(
        tmp_path, capfd, startup_timeout, load_s, loads):
    """model-config.yaml's startupTimeout, as TorchServe applies it: a worker still loading
    then is killed with TorchServe's log lines; one that loads in time serves, even with a
    responseTimeout shorter than its load."""
    from nbserve.handlers.loader import HandlerLoadError
    from nbserve.serving.engine import Engine
    from tests.support.archives import make_archive

    (tmp_path / "slow.py").write_text(SLOW_LOAD.format(seconds=load_s))
    (tmp_path / "model-config.yaml").write_text(
        f"startupTimeout: {startup_timeout}\nresponseTimeout: 1\n")
    mar = make_archive(tmp_path, "slow", "slow.py", config_file="model-config.yaml")
    began = time.monotonic()
    with Engine() as engine:
        if loads:
            version = engine.register(mar, isolation="process")
            assert engine.predict("slow", b"x") == "loaded"
            assert version.config.startup_timeout == startup_timeout
            return
        with pytest.raises(HandlerLoadError, match=r"startupTimeout \(2 s\)"):
            engine.register(mar, isolation="process")
    assert time.monotonic() - began < 15
    said = capfd.readouterr().err
    assert ("Backend worker error\norg.pytorch.serve.wlm.WorkerInitializationException: "
            "Backend worker did not respond in given time") in said, said
