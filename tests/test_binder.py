"""What can be checked of binder/ without repo2docker: it asks for what nbserve needs, installs
nbserve from the repository, and enables the extension."""

import os
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

REPO = Path(__file__).parent.parent
BINDER = REPO / "binder"


def binder_requirements() -> dict[str, Requirement]:
    lines = [line.split("#")[0].strip() for line in (BINDER / "requirements.txt").read_text().splitlines()]
    return {r.name.lower(): r for r in (Requirement(line) for line in lines if line and not line.startswith("-"))}


def test_torch_is_a_cpu_build_with_the_ranges_pyproject_asks_for():
    requirements = binder_requirements()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in (BINDER / "requirements.txt").read_text()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for dependency in map(Requirement, project["dependencies"]):
        if dependency.name in ("torch", "torchvision"):
            assert requirements[dependency.name].specifier == dependency.specifier


def test_jupyterlab_with_widgets_and_what_notebook_03_compares_with():
    requirements = binder_requirements()
    assert {"jupyterlab", "ipywidgets", "torchserve", "torch-model-archiver"} <= set(requirements)
    assert "openjdk-17-jre-headless" in (BINDER / "apt.txt").read_text().split()
    python = (BINDER / "runtime.txt").read_text().strip()
    assert python.startswith("python-3.") and int(python.split(".")[1]) >= 10


def test_post_build_installs_nbserve_from_the_repository_which_enables_the_extension():
    post_build = (BINDER / "postBuild").read_text().splitlines()
    assert os.access(BINDER / "postBuild", os.X_OK)
    # Not editable: a wheel install carries the jupyter_server_config.d file that enables the
    # extension (tests/extension/test_enabled_on_install.py checks the wheel has it).
    assert any(line.startswith("pip install --no-cache-dir '.[llm]'") for line in post_build)
    assert not any("-e" in line.split() for line in post_build if line.startswith("pip install"))
