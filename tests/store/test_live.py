"""Serving objects from the notebook without an archive: modules, TorchScript, handlers."""

import json

import pytest
import torch

from nbserve.api.management import describe
from nbserve.errors import BadRequest
from nbserve.handlers.base import BaseHandler
from nbserve.serving.engine import Engine
from nbserve.store.live import live_model
from tests.support.helpers import assert_same_answer


@pytest.fixture
def linear():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3)


@pytest.fixture
def labels(tmp_path):
    path = tmp_path / "index_to_name.json"
    path.write_text(json.dumps({"0": "zero", "1": "one", "2": "two"}))
    return path


ROWS = [[1.0, 2.0, 3.0, 4.0]]


def test_a_module_is_served_with_a_named_handler_and_its_extra_files(linear, labels, tmp_path):
    live = live_model(linear, "lin", handler="base_handler", extra_files=[labels])
    assert (live.path / "index_to_name.json").read_text() == labels.read_text()
    assert not list(live.path.glob("*.pt*")), "no weights are written"
    with Engine() as engine:
        engine.register(live)
        assert_same_answer(engine.predict("lin", ROWS), linear(torch.tensor(ROWS)).tolist())
        description = describe(engine.get("lin"))
        assert description["modelUrl"] == "Linear (live)" and description["modelVersion"] == "1.0"


def test_what_is_served_is_a_snapshot_taken_at_registration(linear):
    expected = linear(torch.tensor(ROWS)).tolist()
    with Engine() as engine:
        engine.register(live_model(linear, "lin", handler="base_handler"))
        with torch.no_grad():
            linear.bias += 100
        assert_same_answer(engine.predict("lin", ROWS), expected)
    assert linear.training, "serving leaves the notebook's module in its own mode"


def test_a_torchscript_module_is_served_live(linear):
    scripted = torch.jit.script(linear)
    with Engine() as engine:
        engine.register(live_model(scripted, "scripted", handler="base_handler"))
        assert_same_answer(engine.predict("scripted", ROWS), linear(torch.tensor(ROWS)).tolist())


class Floats(BaseHandler):
    def preprocess(self, data):
        return torch.tensor([float(row["body"]) for row in data])

    def postprocess(self, data):
        return data.tolist()


def test_handlers_as_a_class_an_instance_with_its_model_or_a_function(linear):
    identity = torch.nn.Identity()
    prepared = Floats()
    prepared.model = torch.nn.Identity()  # set by hand, no initialize needed

    def handle(data, context):
        return None if data is None else [f"seen {row['body']}" for row in data]

    with Engine() as engine:
        engine.register(live_model(identity, "by_class", handler=Floats))
        engine.register(live_model(prepared, "by_instance"))
        engine.register(live_model(handle, "by_function"))
        assert engine.predict("by_class", 2) == 2.0
        assert engine.predict("by_instance", 3) == 3.0
        assert engine.predict("by_function", "x") == "seen x"


def test_what_cannot_be_served_live_is_refused_clearly(linear, tmp_path):
    with pytest.raises(BadRequest, match="needs a handler"):
        live_model(linear, "lin")
    with pytest.raises(BadRequest, match="Cannot serve a dict"):
        live_model({"weights": 1}, "d")
    with pytest.raises(BadRequest, match="not found"):
        live_model(linear, "lin", handler="base_handler", extra_files=[tmp_path / "missing.json"])
