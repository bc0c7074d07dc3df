"""Fixtures shared by the whole suite: small seeded models and the files an archive is made from.

What the tests share besides fixtures lives in ``tests/support/``: the archives they serve
(``archives``), HTTP clients and assertions (``helpers``), the real TorchServe (``reference``),
kernels (``kernel``), Jupyter (``jupyter_app``), a browser (``browser``) and a Ray cluster
(``ray_cluster``), imported as ``tests.support.*``. The tests are laid out as the package is.
"""

import json
from pathlib import Path

import pytest

TINY_MODEL_PY = '''\
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x)
'''


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Unpack archives into a folder of the test session's, never into ~/.cache."""
    monkeypatch.setenv("NBSERVE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "nbserve-cache"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """model.py, a seeded state dict, labels, a handler, requirements, config and a folder."""
    from tests.support import archives

    d = tmp_path_factory.mktemp("tiny")
    archives.eager_files(d, TINY_MODEL_PY, "TinyNet", "tiny.pth")
    (d / "index_to_name.json").write_text(json.dumps({"0": "zero", "1": "one", "2": "two"}))
    (d / "my_handler.py").write_text("def handle(data, context):\n    return [len(data)]\n")
    (d / "requirements.txt").write_text("numpy\n")
    (d / "model-config.yaml").write_text("batchSize: 4\nmaxBatchDelay: 20\n")
    extra = d / "assets"
    (extra / "vocab").mkdir(parents=True)
    (extra / "vocab" / "words.txt").write_text("a\nb\n")
    (extra / "readme.txt").write_text("assets\n")
    (extra / "__pycache__").mkdir()
    (extra / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (extra / ".git").mkdir()
    (extra / ".git" / "HEAD").write_text("ref\n")
    return d


@pytest.fixture(scope="session")
def chat_model(tmp_path_factory) -> Path:
    """A tiny chat model's Hugging Face folder, trained for a few seconds (tests.support.llm)."""
    from tests.support.llm import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("llm") / "chat")


# Real archives and photos, built once per session (see archives.py), the real TorchServe, and
# a local Ray cluster.
from tests.support.ray_cluster import ray_cluster  # noqa: E402,F401  (a fixture)
from tests.support.reference import torchserve  # noqa: E402,F401  (a fixture)


@pytest.fixture(scope="session")
def photos():
    from tests.support import archives
    return archives.photos()


@pytest.fixture(scope="session")
def classifier_mar(tmp_path_factory):
    from tests.support import archives
    return archives.classifier(tmp_path_factory.mktemp("classifier"))


@pytest.fixture
def server_factory():
    """Start nbserve HTTP servers (and engines) on free loopback ports, stopped after the test:
    ``make(engine=None, **config_properties)`` -> (engine, server, a client per API)."""
    from nbserve.serving.engine import Engine
    from tests.support.helpers import start_server

    running = []

    def make(engine=None, **settings):
        engine = engine or Engine()
        server, clients = start_server(engine, **settings)
        running.append((server, engine))
        return engine, server, clients

    yield make
    for server, engine in running:
        server.stop(timeout=5)
        engine.close()


@pytest.fixture(scope="session")
def engine():
    """One engine for a test module's models; each test registers what it serves."""
    from nbserve.serving.engine import Engine
    with Engine() as e:
        yield e
