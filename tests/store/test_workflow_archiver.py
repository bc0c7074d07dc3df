"""``nbserve archive-workflow`` writes what torch-workflow-archiver 0.2.15 writes from the same
flags, and TorchServe serves it."""

import json
import shutil
import subprocess
import sys
import zipfile

from tests.support.archives import make_archive

SPEC = "models:\n  upper:\n    url: upper.mar\ndag:\n  strip: [upper]\n"
UPPER_PY = ("def handle(data, context):\n    return data and [row['body'].decode().upper() "
            "for row in data]\n")
FUNCTIONS_PY = ("def strip(data, context):\n    return data and "
                "[row['body'].strip() for row in data]\n")
FLAGS = ["--workflow-name", "shout", "--spec-file", "spec.yaml", "--handler", "functions.py",
         "--extra-files", "notes.txt"]


def nbserve(*args, cwd):
    return subprocess.run([sys.executable, "-m", "nbserve", *args], cwd=cwd,
                          capture_output=True, text=True)


def test_the_same_archive_as_torch_workflow_archiver_and_torchserve_serves_it(tmp_path,
                                                                            torchserve):
    (tmp_path / "spec.yaml").write_text(SPEC)
    (tmp_path / "functions.py").write_text(FUNCTIONS_PY)
    (tmp_path / "notes.txt").write_text("a note")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "ours").mkdir()
    subprocess.run(["torch-workflow-archiver", *FLAGS, "--export-path", "theirs"], check=True,
                   cwd=tmp_path, capture_output=True)
    made = nbserve("archive-workflow", *FLAGS, "--export-path", "ours", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "ours/shout.war"

    with zipfile.ZipFile(tmp_path / "theirs/shout.war") as theirs, \
            zipfile.ZipFile(tmp_path / "ours/shout.war") as ours:
        assert sorted(ours.namelist()) == sorted(theirs.namelist())
        for name in ours.namelist():
            if name != "WAR-INF/MANIFEST.json":
                assert ours.read(name) == theirs.read(name), name
        mine = json.loads(ours.read("WAR-INF/MANIFEST.json"))
        their_manifest = json.loads(theirs.read("WAR-INF/MANIFEST.json"))
    assert mine.keys() == their_manifest.keys()
    assert mine["workflow"] == their_manifest["workflow"] == {
        "workflowName": "shout", "specFile": "spec.yaml", "handler": "functions.py"}
    assert mine["archiverVersion"] == their_manifest["archiverVersion"]

    again = nbserve("archive-workflow", *FLAGS, "--export-path", "ours", cwd=tmp_path)
    assert again.returncode != 0 and "already exists" in again.stderr
    assert nbserve("archive-workflow", *FLAGS, "--export-path", "ours", "-f",
                   cwd=tmp_path).returncode == 0

    (tmp_path / "upper.py").write_text(UPPER_PY)
    shutil.copy(make_archive(tmp_path, "upper", "upper.py"), torchserve.store / "upper.mar")
    shutil.copy(tmp_path / "ours/shout.war", torchserve.store / "shout.war")
    status, body = torchserve.request("management", "workflows?url=shout.war", "POST")
    assert status == 200, body
    try:
        assert torchserve.request("inference", "wfpredict/shout", "POST", b"  quiet ",
                                  {"Content-Type": "text/plain"}) == (200, b"QUIET")
    finally:
        torchserve.request("management", "workflows/shout", "DELETE")


def test_a_bad_name_or_a_missing_spec_is_said_and_nothing_is_written(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC)
    bad = nbserve("archive-workflow", "--workflow-name", "no/slash", "--spec-file", "spec.yaml",
                  cwd=tmp_path)
    assert bad.returncode != 0 and "special characters" in bad.stderr
    missing = nbserve("archive-workflow", "--workflow-name", "shout", "--spec-file", "gone.yaml",
                      cwd=tmp_path)
    assert missing.returncode != 0 and "gone.yaml" in missing.stderr
    assert not list(tmp_path.glob("*.war"))
