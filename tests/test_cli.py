"""The ``nbserve`` command line, run as a user runs it: a real process, its output and exit status."""

import io
import subprocess
import sys
import zipfile

import pytest

from nbserve.cli import PROGRESS_THRESHOLD, TerminalProgress


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


def test_a_mistyped_flag_or_verb_names_the_one_meant():
    result = nbserve("serve", "--modles", "x")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: nbserve serve"), result.stderr
    assert "unrecognized arguments: --modles x (did you mean --models?)" in result.stderr
    result = nbserve("serv", "--models", "x")
    assert result.returncode == 2 and "(did you mean serve?)" in result.stderr, result.stderr


def test_terminal_progress_only_for_big_archives():
    stream = io.StringIO()
    bar = TerminalProgress("Archiving big", stream=stream)
    bar(10, 1000)
    assert stream.getvalue() == ""
    bar(PROGRESS_THRESHOLD // 2, PROGRESS_THRESHOLD)
    bar.close()
    assert "Archiving big [" in stream.getvalue()
    assert "32/64 MiB" in stream.getvalue()
    assert stream.getvalue().endswith("\n")
