"""TorchServe's config snapshots from ``nbserve serve``: written on start, after each change
and at stop; a restart serves what was served; TorchServe starts from nbserve's snapshot and
nbserve from TorchServe's; ``--ncs`` neither writes nor reads them."""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import requests

from tests.support import archives, reference
from tests.support.helpers import nbserve_serve
from tests.support.jupyter_app import free_port


def stop(process):
    process.send_signal(signal.SIGTERM)
    process.wait(60)


def describe(port, model):
    answer = requests.get(f"http://127.0.0.1:{port}/models/{model}", timeout=60)
    assert answer.status_code == 200, answer.text
    (described,) = answer.json()
    return (described["minWorkers"], described["batchSize"], len(described["workers"]))


@pytest.fixture
def store(tmp_path):
    folder = tmp_path / "store"
    folder.mkdir()
    shutil.copy(archives.controlled(tmp_path / "ctl"), folder / "ctl.mar")
    config = tmp_path / "config.properties"
    config.write_text(f"grpc_inference_port={free_port()}\ngrpc_management_port={free_port()}\n"
                      "enable_model_api=true\ndisable_token_authorization=true\n")
    return folder, config


def test_a_restart_serves_what_was_served_and_torchserve_starts_from_the_snapshot(tmp_path, store):
    folder, config = store
    first, ports, _ = nbserve_serve("--model-store", str(folder), "--models", "ctl=ctl.mar",
                                    "--ts-config", str(config), cwd=tmp_path)
    try:
        management = f"http://127.0.0.1:{ports['management']}"
        assert requests.put(f"{management}/models/ctl?min_worker=2&synchronous=true",
                            timeout=60).status_code == 200
        assert requests.post(f"{management}/models?url=ctl.mar&model_name=other&batch_size=3"
                             "&initial_workers=1&synchronous=true", timeout=60).status_code == 200
    finally:
        stop(first)
    written = sorted(p.name for p in (tmp_path / "logs" / "config").glob("*.cfg"))
    assert [name.split("-")[1] for name in written] == [
        "startup.cfg", "snapshot.cfg", "snapshot.cfg", "shutdown.cfg"], written

    # Without --ts-config, the newest snapshot; its models, not --models', as TorchServe does.
    second, ports, said = nbserve_serve("--model-store", str(folder), "--models", "none.mar",
                                        cwd=tmp_path)
    try:
        assert any(written[-1] in line for line in said), said
        assert describe(ports["management"], "ctl") == (2, 4, 2)
        assert describe(ports["management"], "other") == (1, 3, 1)
    finally:
        stop(second)

    if not reference.available():
        pytest.skip("TorchServe (torchserve and java) is not installed")
    newest = max((tmp_path / "logs" / "config").glob("*.cfg"))
    theirs = tmp_path / "torchserve"
    theirs.mkdir()
    env = {**os.environ, "TMPDIR": str(theirs)}
    subprocess.run(["torchserve", "--start", "--ts-config", str(newest), "--model-store",
                    str(folder)], check=True, cwd=theirs, env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if describe(ports["management"], "other")[2] == 1:
                    break
            except (requests.ConnectionError, AssertionError):
                pass
            assert time.monotonic() < deadline, (theirs / "logs" / "ts_log.log").read_text()
            time.sleep(1)
        assert describe(ports["management"], "ctl") == (2, 4, 2)
        assert describe(ports["management"], "other") == (1, 3, 1)
    finally:
        subprocess.run(["torchserve", "--stop"], cwd=theirs, env=env, stdout=subprocess.DEVNULL)

    # And nbserve from TorchServe's own snapshot.
    their_snapshot = max((theirs / "logs" / "config").glob("*.cfg"))
    third, ports, _ = nbserve_serve("--ts-config", str(their_snapshot), "--ncs", cwd=tmp_path)
    try:
        assert describe(ports["management"], "ctl") == (2, 4, 2)
        assert describe(ports["management"], "other") == (1, 3, 1)
    finally:
        stop(third)


def test_ncs_neither_writes_nor_reads_snapshots(tmp_path, store):
    folder, config = store
    first, _, _ = nbserve_serve("--model-store", str(folder), "--models", "ctl=ctl.mar",
                                "--ts-config", str(config), cwd=tmp_path)
    stop(first)
    assert len(list((tmp_path / "logs" / "config").glob("*.cfg"))) == 2  # startup, shutdown
    second, ports, said = nbserve_serve("--model-store", str(folder), "--ncs",
                                        "--disable-token-auth", cwd=tmp_path)
    try:
        listed = requests.get(f"http://127.0.0.1:{ports['management']}/models", timeout=60)
        assert json.loads(listed.text)["models"] == []
        assert not any("snapshot" in line for line in said), said
    finally:
        stop(second)
    assert len(list((tmp_path / "logs" / "config").glob("*.cfg"))) == 2


def test_a_snapshot_naming_an_archive_that_is_gone_refuses_to_start(tmp_path, store):
    """As TorchServe: a snapshot is the whole state, so half of it is not served."""
    folder, config = store
    first, _, _ = nbserve_serve("--model-store", str(folder), "--models", "ctl=ctl.mar",
                                "--ts-config", str(config), cwd=tmp_path)
    stop(first)
    (folder / "ctl.mar").unlink()
    with pytest.raises(AssertionError, match="the snapshot names ctl, which could not be loaded"):
        nbserve_serve("--model-store", str(folder), cwd=tmp_path)
