"""TorchServe's workflows over real HTTP, with ``.war`` files made by the real
torch-workflow-archiver and served by TorchServe 0.12 beside nbserve: the same answers for a
sequential DAG, a parallel one with an aggregating function, several leaves and a failing
node, and TorchServe's errors; and the model API asked for, as for models."""

import json
import shutil
import subprocess

import pytest

from nbserve.serving.engine import Engine
from tests.support.archives import make_archive
from tests.support.helpers import start_server

#: A model node's handler: what it was given, tagged with its name.
TAGGING_PY = '''
import json


def handle(data, context):
    if data is None:
        return None
    answers = []
    for row in data:
        body = row.get("data") or row.get("body")
        if isinstance(body, (bytes, bytearray)):
            body = body.decode()
        answers.append({"model": context.model_name.split("__")[-1], "saw": body})
    return answers
'''

#: The workflow's functions, as TorchServe's examples write them.
FUNCTIONS_PY = '''
import json


def _text(row):
    body = row.get("data") or row.get("body")
    if isinstance(body, (bytes, bytearray)):
        return body.decode()
    return body if isinstance(body, str) else json.dumps(body)


def pre(data, context):
    if data is None:
        return None
    return ["pre(" + _text(row) + ")" for row in data]


def post(data, context):
    if data is None:
        return None
    return [{"post": json.loads(_text(row))} for row in data]


def aggregate(data, context):
    if data is None:
        return None
    return [{name: json.loads(value.decode()) for name, value in sorted(row.items())}
            for row in data]


def fail(data, context):
    if data is None:
        return None
    raise ValueError("this node always fails")
'''

SPECS = {
    "sequential": "models:\n  min-workers: 1\n  first:\n    url: tagging.mar\n"
                  "dag:\n  pre: [first]\n  first: [post]\n",
    "parallel": "models:\n  retry-attempts: 1\n  left:\n    url: tagging.mar\n"
                "  right:\n    url: tagging.mar\n"
                "dag:\n  pre: [left, right]\n  left: [aggregate]\n  right: [aggregate]\n",
    "leaves": "models:\n  left:\n    url: tagging.mar\n  right:\n    url: tagging.mar\n"
              "dag:\n  pre: [left, right]\n",
    "failing": "models:\n  retry-attempts: 2\n  timeout-ms: 2000\n"
               "dag:\n  pre: [fail]\n",
    "two_starts": "models:\n  a:\n    url: tagging.mar\n  b:\n    url: tagging.mar\n"
                  "dag:\n  a: [post]\n  b: [post]\n",
    "not_yaml": "models: [unclosed\n",
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("workflows")
    (folder / "tagging.py").write_text(TAGGING_PY)
    shutil.copy(make_archive(folder, "tagging", "tagging.py"), folder / "tagging.mar")
    (folder / "functions.py").write_text(FUNCTIONS_PY)
    for name, spec in SPECS.items():
        (folder / f"{name}.yaml").write_text(spec)
        subprocess.run(["torch-workflow-archiver", "--workflow-name", name, "--spec-file",
                        f"{name}.yaml", "--handler", "functions.py", "--export-path", ".",
                        "-f"], check=True, cwd=folder, capture_output=True)
    return folder


@pytest.fixture(scope="module")
def ours(store):
    engine = Engine()
    server, clients = start_server(engine, model_store=str(store), enable_model_api=True)
    yield clients
    server.stop()
    engine.close()


@pytest.fixture(scope="module")
def theirs(store, torchserve):
    for path in store.glob("*.[mw]ar"):
        shutil.copy(path, torchserve.store / path.name)
    return torchserve


def register(ours, theirs, name):
    mine = ours["management"].json("POST", f"/workflows?url={name}.war")
    status, body = theirs.request("management", f"workflows?url={name}.war", "POST")
    return mine, (status, json.loads(body))


def predict(ours, theirs, name, body):
    text = {"Content-Type": "text/plain"}
    status, _, answer = ours["inference"].call("POST", f"/wfpredict/{name}", body, text)
    their_status, their_answer = theirs.request("inference", f"wfpredict/{name}", "POST", body,
                                                text)
    return (status, answer), (their_status, their_answer)


@pytest.mark.parametrize("name, expected", [
    ("sequential", {"post": {"model": "first", "saw": "pre(hello)"}}),
    ("parallel", {"aggregate": None}),
    ("leaves", {"left": {"model": "left", "saw": "pre(hello)"},
                "right": {"model": "right", "saw": "pre(hello)"}}),
])
def test_a_workflow_answers_as_torchserve_does(ours, theirs, name, expected):
    mine, their_registration = register(ours, theirs, name)
    assert mine == their_registration == (
        200, {"status": f"Workflow {name} has been registered and scaled successfully."})
    try:
        (status, answer), (their_status, their_answer) = predict(ours, theirs, name, b"hello")
        assert status == their_status == 200, (answer, their_answer)
        assert json.loads(answer) == json.loads(their_answer)
        if name == "parallel":
            assert json.loads(answer) == {"left": {"model": "left", "saw": "pre(hello)"},
                                          "right": {"model": "right", "saw": "pre(hello)"}}
        else:
            assert json.loads(answer) == expected
        described = ours["management"].json("GET", f"/workflows/{name}")
        their_described = theirs.request("management", f"workflows/{name}")
        assert described == (their_described[0], json.loads(their_described[1]))
        models = {m["modelName"] for m in ours["management"].json("GET", "/models")[1]["models"]}
        assert {f"{name}__pre"} <= models
    finally:
        assert ours["management"].json("DELETE", f"/workflows/{name}") == (
            200, {"status": f'Workflow "{name}" unregistered'})
        theirs.request("management", f"workflows/{name}", "DELETE")
    models = {m["modelName"] for m in ours["management"].json("GET", "/models")[1]["models"]}
    assert not any(m.startswith(f"{name}__") for m in models)  # its nodes went with it


def test_a_failing_node_is_tried_again_then_fails_the_request(ours, theirs):
    register(ours, theirs, "failing")
    try:
        (status, answer), (their_status, their_answer) = predict(ours, theirs, "failing", b"x")
        assert status == their_status == 500
        assert json.loads(answer)["type"] == json.loads(their_answer)["type"]
        assert "Error executing fail" in json.loads(answer)["message"]
        assert "Error executing fail" in json.loads(their_answer)["message"]
    finally:
        ours["management"].call("DELETE", "/workflows/failing")
        theirs.request("management", "workflows/failing", "DELETE")


def test_torchserves_errors(ours, theirs):
    listed = ours["management"].json("GET", "/workflows")
    assert listed == (200, {"workflows": []})
    unknown = ours["inference"].call("POST", "/wfpredict/nothing", b"x")
    assert unknown[0] == theirs.request("inference", "wfpredict/nothing", "POST", b"x")[0] == 404
    assert ours["management"].json("POST", "/workflows")[0] == 400
    assert ours["management"].json("POST", "/workflows?url=missing.war")[0] == 404
    mine, their_answer = register(ours, theirs, "two_starts")
    assert mine[0] == their_answer[0] == 400
    assert "only one start node" in mine[1]["message"]
    mine, their_answer = register(ours, theirs, "not_yaml")
    assert mine[0] == 400 and their_answer[0] >= 400
    register(ours, theirs, "sequential")
    try:
        again = ours["management"].json("POST", "/workflows?url=sequential.war")
        their_again = theirs.request("management", "workflows?url=sequential.war", "POST")
        assert again[0] == their_again[0] == 409
        assert again[1]["message"] == "Workflow sequential is already registered."
    finally:
        ours["management"].call("DELETE", "/workflows/sequential")
        theirs.request("management", "workflows/sequential", "DELETE")


def test_registering_a_workflow_needs_the_model_api(store):
    """TorchServe 0.12 registers workflows with the model API off; a workflow runs its own
    handler file, so nbserve asks for enable_model_api as for models."""
    engine = Engine()
    server, clients = start_server(engine, model_store=str(store))
    try:
        status, answer = clients["management"].json("POST", "/workflows?url=sequential.war")
        assert status == 405 and "enable_model_api" in answer["message"]
        assert engine.models() == []  # nothing was served, no handler file ran
    finally:
        server.stop()
        engine.close()


def test_without_the_keys_no_workflow_is_registered_or_run(ours):
    """The management key guards /workflows and the inference key /wfpredict: a wrong one
    answers TorchServe's 400 and nothing is registered, no node served, no handler file run."""
    from tests.support.helpers import Client

    wrong = {api: Client(f"http://{c.host}:{c.port}", "not-the-key") for api, c in ours.items()}
    status, answer = wrong["management"].json("POST", "/workflows?url=sequential.war")
    assert status == 400 and answer["type"] == "InvalidKeyException"
    assert ours["management"].json("GET", "/workflows") == (200, {"workflows": []})
    models = ours["management"].json("GET", "/models")[1]["models"]
    assert not any(m["modelName"].startswith("sequential__") for m in models)
    assert ours["management"].json("POST", "/workflows?url=sequential.war")[0] == 200
    try:
        status, _, _ = wrong["inference"].call("POST", "/wfpredict/sequential", b"hello",
                                                {"Content-Type": "text/plain"})
        assert status == 400
        status, answer = wrong["management"].json("DELETE", "/workflows/sequential")
        assert status == 400
        assert [w["workflowName"] for w in
                ours["management"].json("GET", "/workflows")[1]["workflows"]] == ["sequential"]
    finally:
        ours["management"].call("DELETE", "/workflows/sequential")
