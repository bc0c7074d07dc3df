"""A real Jupyter server with nbserve's extension, and real kernels started through its REST API."""

import os

import pytest

from tests.support.jupyter_app import Jupyter


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory):
    root = tmp_path_factory.mktemp("jupyter")
    runtime = root / ".runtime"
    runtime.mkdir()
    env = {**os.environ, "NBSERVE_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "nbserve-cache")}
    server = Jupyter(root, str(runtime), env)
    yield server
    server.stop()
