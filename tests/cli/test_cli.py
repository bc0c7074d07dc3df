"""The ``nbserve`` command line, run as a user runs it: a real process, its output and exit status."""

import io
import subprocess
import sys
import zipfile

import pytest

from nbserve.progress import ARCHIVE_THRESHOLD, Progress


def nbserve(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "nbserve", *args], cwd=cwd,
                          capture_output=True, text=True)


def test_archive_prints_the_path_it_wrote(tiny_model_dir, tmp_path):
    result = nbserve("archive", "--model-name", "tiny", "-v", "1.0",
                     "--model-file", str(tiny_model_dir / "model.py"),
                     "--serialized-file", str(tiny_model_dir / "tiny.pth"),
                     "--handler", "image_classifier", "--export-path", str(tmp_path / "store"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "store" / "tiny.mar")
    assert "MAR-INF/MANIFEST.json" in zipfile.ZipFile(tmp_path / "store" / "tiny.mar").namelist()


@pytest.mark.parametrize("args, message", [
    (["--model-name", "tiny", "-v", "1", "--handler", "image_classifier",
      "--serialized-file", "missing.pth"], "serialized file 'missing.pth' does not exist"),
    (["--model-name", "tiny", "-v", "1", "--handler", "image_classifier",
      "--extra-files", "index_to_name.json,nowhere.json"], "extra file 'nowhere.json' does not exist"),
    (["--model-name", "bad name!", "-v", "1", "--handler", "image_classifier"],
     "Invalid model name 'bad name!'"),
    (["--model-name", "tiny", "-v", "1", "--handler", "image_clasifier"],
     "Unknown handler 'image_clasifier'"),
])
def test_user_errors_give_a_message_and_status_1(tiny_model_dir, args, message):
    result = nbserve("archive", *args, "--export-path", "out", cwd=tiny_model_dir)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_an_existing_archive_needs_force(tiny_model_dir, tmp_path):
    args = ["archive", "--model-name", "tiny", "-v", "1", "--handler", "image_classifier",
            "--export-path", str(tmp_path)]
    assert nbserve(*args).returncode == 0
    refused = nbserve(*args)
    assert refused.returncode == 1
    assert "already exists. Use --force/-f" in refused.stderr
    assert nbserve(*args, "-f").returncode == 0


def test_missing_required_flags_are_argparse_errors():
    result = nbserve("archive", "--model-name", "tiny")
    assert result.returncode == 2
    assert "the following arguments are required: --handler, -v/--version" in result.stderr


def test_serve_refuses_a_model_store_that_does_not_exist(tmp_path):
    result = nbserve("serve", "--model-store", str(tmp_path / "nowhere"), "--models", "all")
    assert result.returncode == 1
    assert f"The model store {tmp_path / 'nowhere'} is not a folder" in result.stderr


def test_a_mistyped_flag_or_verb_names_the_one_meant():
    result = nbserve("serve", "--modles", "x")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: nbserve serve"), result.stderr
    assert "unrecognized arguments: --modles x (did you mean --models?)" in result.stderr
    result = nbserve("serv", "--models", "x")
    assert result.returncode == 2 and "(did you mean serve?)" in result.stderr, result.stderr


def test_archive_progress_only_for_big_archives_on_a_terminal():
    stream = io.StringIO()
    bar = Progress.archive("Archiving big", file=stream, mininterval=0)
    bar(10, 1000)
    assert stream.getvalue() == "" and not bar.shown
    bar(ARCHIVE_THRESHOLD // 2, ARCHIVE_THRESHOLD)
    bar(ARCHIVE_THRESHOLD, ARCHIVE_THRESHOLD)
    bar.close()
    assert "Archiving big:  50%" in stream.getvalue()
    assert "32.0M/64.0M" in stream.getvalue() and "64.0M/64.0M" in stream.getvalue()
    assert stream.getvalue().endswith("\n")


def test_serve_start_runs_in_the_background_and_stop_ends_it_as_torchserve_does(tmp_path):
    """torchserve --start / --stop, as TorchServe's scripts and test suite call them."""
    import json
    import os
    import socket
    import threading

    from tests.support.archives import controlled
    from tests.support.helpers import Client
    from tests.support.jupyter_app import free_port

    ports = {api: free_port() for api in ("inference", "management", "metrics")}
    flags = ["--models", f"ctl={controlled(tmp_path / 'ctl')}",
             *(f"--{api}-address=http://127.0.0.1:{port}" for api, port in ports.items())]
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # where the pid file goes, as TorchServe's

    def run(*args):
        return subprocess.run([sys.executable, "-m", "nbserve", "serve", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=240)

    # As TorchServe's launcher (ts.launcher.start) starts it: reading its output until the
    # server says it started, and on after that (the server keeps the caller's output).
    starter = subprocess.Popen([sys.executable, "-m", "nbserve", "serve", "--start", *flags],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    said = []
    for line in starter.stdout:
        said.append(line)
        if "Model server started" in line:
            break
    threading.Thread(target=starter.stdout.read, daemon=True).start()
    assert starter.wait(240) == 0, said  # once the APIs listen
    keys = json.loads((tmp_path / "key_file.json").read_text())
    client = Client(f"http://127.0.0.1:{ports['inference']}", keys["inference"]["key"])
    assert client.json("POST", "/predictions/ctl", b"{}", {"Content-Type": "application/json"}
                       )[0] == 200
    again = run("--start", *flags)
    assert again.returncode == 1 and "already running" in again.stderr
    assert client.json("GET", "/ping")[0] == 200  # the first one, untouched
    stopped = run("--stop")
    assert stopped.returncode == 0 and "nbserve has stopped." in stopped.stderr
    assert not (tmp_path / ".nbserve.pid").exists() and not (tmp_path / "key_file.json").exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", ports["inference"]), timeout=5)
    assert "metrics API at" in (tmp_path / "logs" / "ts_log.log").read_text()
    assert run("--stop").stderr.strip() == "nbserve is not currently running."
