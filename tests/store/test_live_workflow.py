"""A workflow declared from live objects: served under /wfpredict without a .war, then archived
into one that TorchServe serves with the same answers."""

import json
import zipfile

import pytest
import torch

from nbserve.errors import ArchiveError, BadRequest
from nbserve.serving.engine import Engine
from nbserve.store.live import live_model
from nbserve.store.live_workflow import archive_live_workflow, live_workflow
from tests.support.archives import make_archive
from tests.support.helpers import start_server

TAGGING_PY = '''
def handle(data, context):
    if data is None:
        return None
    return [{"model": context.model_name.split("__")[-1],
             "saw": (row.get("data") or row.get("body")).decode()} for row in data]
'''


def _text(row):
    body = row.get("data") or row.get("body")
    if isinstance(body, (bytes, bytearray)):
        return body.decode()
    return body if isinstance(body, str) else json.dumps(body)


def pre(data, context):
    return data and ["pre(" + _text(row) + ")" for row in data]


def aggregate(data, context):
    return data and [{name: json.loads(value) for name, value in sorted(row.items())}
                     for row in data]


@pytest.fixture
def tagging(tmp_path):
    (tmp_path / "tagging.py").write_text(TAGGING_PY)
    return make_archive(tmp_path, "tagging", "tagging.py")


def test_a_live_workflow_is_served_then_archived_and_torchserve_answers_the_same(
        tmp_path, tagging, torchserve):
    with Engine() as engine:
        engine.register(tagging, model_name="served_here")
        pipeline = live_workflow(
            "fanout", {pre: ["left", "right"], "left": [aggregate], "right": [aggregate]},
            {"retry-attempts": 2, "left": tagging, "right": {"url": "served_here",
                                                             "batch-size": 2}},
            lambda url: engine.get(url).archive if url == "served_here" else url)
        server, clients = start_server(engine)
        try:
            server.management.add_workflow(pipeline, resolve=None)
            assert engine.get("fanout__right").config.batch_size == 2
            status, _, answer = clients["inference"].call(
                "POST", "/wfpredict/fanout", b"hi", {"Content-Type": "text/plain"})
            assert status == 200, answer
            expected = {"left": {"model": "left", "saw": "pre(hi)"},
                        "right": {"model": "right", "saw": "pre(hi)"}}
            assert json.loads(answer) == expected
            described = clients["management"].json("GET", "/workflows/fanout")[1][0]
            assert described["workflowDag"] == "{pre=[left, right], left=[aggregate], " \
                                               "right=[aggregate]}"
        finally:
            server.stop()

    path = archive_live_workflow(pipeline, tmp_path / "wf-store")
    assert sorted(p.name for p in path.parent.iterdir()) == ["fanout.war", "tagging.mar"]
    with zipfile.ZipFile(path) as war:
        handler = war.read("fanout_handler.py").decode()
        assert "import json" in handler and "def _text(row)" in handler
        assert json.loads(war.read("WAR-INF/MANIFEST.json"))["workflow"] == {
            "workflowName": "fanout", "specFile": "fanout.yaml", "handler": "fanout_handler.py"}
    for archive in path.parent.iterdir():
        (torchserve.store / archive.name).write_bytes(archive.read_bytes())
    status, body = torchserve.request("management", "workflows?url=fanout.war", "POST")
    assert status == 200, body
    try:
        status, answer = torchserve.request("inference", "wfpredict/fanout", "POST", b"hi",
                                            {"Content-Type": "text/plain"})
        assert (status, json.loads(answer)) == (200, expected)
    finally:
        torchserve.request("management", "workflows/fanout", "DELETE")


def test_what_a_live_workflow_cannot_be_is_said(tmp_path, tagging):
    with pytest.raises(BadRequest, match="neither a model in models nor a function"):
        live_workflow("w", {pre: ["missing"]}, {}, lambda url: url)
    with pytest.raises(BadRequest, match="defined with def"):
        live_workflow("w", {(lambda data, context: data): []}, {}, lambda url: url)
    with pytest.raises(BadRequest, match="only one start node"):
        live_workflow("w", {"a": [aggregate], "b": [aggregate]}, {"a": tagging, "b": tagging},
                      lambda url: url)

    net = torch.nn.Linear(2, 2)
    live = live_workflow("w", {pre: ["net"]}, {"net": "net"},
                         lambda url: live_model(net, "net", handler="base_handler"))
    with pytest.raises(ArchiveError, match="live object"):
        archive_live_workflow(live, tmp_path / "out")

    threshold = 0.5

    def reads_a_closure(data, context):
        return [threshold for _ in data]

    def reads_a_global(data, context):
        return [TAGGING_PY for _ in data]

    for function in (reads_a_closure, reads_a_global):
        reading = live_workflow("r", {function: []}, {}, lambda url: url)
        with pytest.raises(ArchiveError, match="define it inside the function"):
            archive_live_workflow(reading, tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.war"))
