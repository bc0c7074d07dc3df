"""A TorchServe workflow served from a notebook: ``%serve pipeline.war`` serves its nodes,
``%predict`` runs a request through its DAG, as ``/wfpredict`` does."""

import shutil
import subprocess

from tests.support.archives import make_archive
from tests.support.kernel import Kernel, text

SPEC = "models:\n  upper:\n    url: upper.mar\ndag:\n  strip: [upper]\n"
UPPER_PY = ("def handle(data, context):\n    return data and [row['body'].decode().upper() "
            "for row in data]\n")
FUNCTIONS_PY = ("def strip(data, context):\n    return data and "
                "[row['body'].strip() for row in data]\n")


def test_serve_and_predict_a_workflow_in_a_kernel(tmp_path):
    (tmp_path / "upper.py").write_text(UPPER_PY)
    shutil.copy(make_archive(tmp_path, "upper", "upper.py"), tmp_path / "upper.mar")
    (tmp_path / "spec.yaml").write_text(SPEC)
    (tmp_path / "functions.py").write_text(FUNCTIONS_PY)
    subprocess.run(["torch-workflow-archiver", "--workflow-name", "shout", "--spec-file",
                    "spec.yaml", "--handler", "functions.py", "--export-path", "."],
                   check=True, cwd=tmp_path, capture_output=True)
    env = {"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "NBSERVE_CACHE_DIR": str(tmp_path / "cache")}
    with Kernel(tmp_path, env=env) as kernel:
        kernel.ok("%load_ext nbserve\nimport nbserve")
        served = text(kernel.ok("%serve shout.war"))
        assert "shout__upper" in served and "shout__strip" in served, served
        kernel.ok("words = '  quiet  '\nanswer = %predict shout words")
        assert kernel.value("answer") == "QUIET"
        assert kernel.value("nbserve.predict('shout', b' again ')") == "AGAIN"
        kernel.ok("%serve --stop")


LIVE_CELL = '''
import re

def strip(data, context):
    return data and [row["body"].strip() for row in data]

def exclaim(data, context):
    return data and [re.sub(rb"$", b"!", row["body"]).decode() for row in data]

pipeline = nbserve.workflow("loud", {strip: ["upper"], "upper": [exclaim]},
                            {"upper": "upper.mar"})
'''


def test_a_workflow_declared_in_a_cell_is_served_and_archived(tmp_path):
    (tmp_path / "upper.py").write_text(UPPER_PY)
    shutil.copy(make_archive(tmp_path, "upper", "upper.py"), tmp_path / "upper.mar")
    env = {"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "NBSERVE_CACHE_DIR": str(tmp_path / "cache")}
    with Kernel(tmp_path, env=env) as kernel:
        kernel.ok("%load_ext nbserve\nimport nbserve")
        kernel.ok(LIVE_CELL)
        served = text(kernel.ok("%serve pipeline"))
        assert "loud__strip" in served and "loud__exclaim" in served, served
        kernel.ok("words = ' quiet '\nanswer = %predict loud words")
        assert kernel.value("answer") == "QUIET!"
        kernel.ok("path = %archive_workflow pipeline --export-path wf-store")
        assert kernel.value("str(path)") == "wf-store/loud.war"
        kernel.ok("%serve wf-store/loud.war")  # the archive replaces the live workflow
        kernel.ok("again = %predict loud words")
        assert kernel.value("again") == "QUIET!"
        kernel.ok("%serve --stop")
    assert sorted(p.name for p in (tmp_path / "wf-store").iterdir()) == ["loud.war", "upper.mar"]
