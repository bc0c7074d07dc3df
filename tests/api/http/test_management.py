"""The management API over real HTTP, and its JSON shapes against the real TorchServe."""

import json
import shutil
import time

import pytest

from tests.support.archives import controlled


@pytest.fixture
def store(tmp_path, classifier_mar):
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(classifier_mar, store / "resnet18.mar")
    shutil.copy(controlled(tmp_path / "ctl"), store / "ctl.mar")
    return store


@pytest.fixture
def management(server_factory, store):
    engine, _, clients = server_factory(model_store=str(store), enable_model_api=True)
    return engine, clients["management"], clients["inference"]


def test_register_predict_scale_describe_unregister(management, photos):
    engine, client, inference = management
    status, answer = client.json("POST", "/models?url=resnet18.mar&initial_workers=1&synchronous=true")
    assert status == 200
    assert answer == {"status": 'Model "resnet18" Version: 1.0 registered with 1 initial workers'}
    assert inference.call("PUT", "/predictions/resnet18", photos["cat.jpg"])[0] == 200

    status, answer = client.json("PUT", "/models/resnet18?min_worker=2&synchronous=true")
    assert (status, answer) == (200, {"status": "Workers scaled to 2 for model: resnet18"})
    status, described = client.json("GET", "/models/resnet18")
    assert status == 200 and len(described) == 1
    assert [w["status"] for w in described[0]["workers"]] == ["READY", "READY"]

    status, answer = client.json("PUT", "/models/resnet18/1.0?min_worker=1")
    assert (status, answer) == (202, {"status": "Processing worker updates..."})
    deadline = time.monotonic() + 60  # the scale goes on behind the answer
    while len(client.json("GET", "/models/resnet18")[1][0]["workers"]) != 1:
        assert time.monotonic() < deadline, "the asynchronous scale never happened"
        time.sleep(0.05)

    status, answer = client.json("DELETE", "/models/resnet18")
    assert (status, answer) == (200, {"status": 'Model "resnet18" unregistered'})
    assert client.json("GET", "/models/resnet18")[0] == 404


def test_registration_options_and_versions(management):
    engine, client, _ = management
    assert client.json("POST", "/models?url=ctl.mar&batch_size=4&max_batch_delay=50")[0] == 200
    assert client.json("POST", "/models?url=ctl.mar&model_name=ctl2&batch_size=2")[0] == 200
    described = client.json("GET", "/models/ctl")[1][0]
    assert (described["batchSize"], described["maxBatchDelay"]) == (4, 50)
    engine.register(controlled(engine.model("ctl").default.archive.path.parent / "v2", "v2"),
                    version="2.0")
    assert [d["modelVersion"] for d in client.json("GET", "/models/ctl/all")[1]] == ["1.0", "2.0"]
    assert client.json("GET", "/models/ctl/2.0")[1][0]["modelVersion"] == "2.0"
    status, answer = client.json("PUT", "/models/ctl/2.0/set-default")
    assert (status, answer["status"]) == (200, 'Default version successfully updated for model "ctl" to "2.0"')
    assert engine.predict("ctl", "x")["tag"] == "v2"
    assert client.json("PUT", "/models/ctl/9.9/set-default")[1]["type"] == "ModelVersionNotFoundException"


def test_list_is_paged(management):
    engine, client, _ = management
    for name in ("a", "b", "c"):
        client.json("POST", f"/models?url=ctl.mar&model_name={name}")
    status, first = client.json("GET", "/models?limit=2")
    assert first == {"nextPageToken": "2", "models": [{"modelName": "a", "modelUrl": "ctl.mar"},
                                                      {"modelName": "b", "modelUrl": "ctl.mar"}]}
    assert client.json("GET", "/models?limit=2&next_page_token=2")[1] == {
        "models": [{"modelName": "c", "modelUrl": "ctl.mar"}]}


@pytest.mark.parametrize("url, status, error_type", [
    ("missing.mar", 404, "ModelNotFoundException"),
    ("../outside.mar", 400, "BadRequestException"),
    ("ftp://example.invalid/x.mar", 400, "BadRequestException"),
])
def test_bad_urls_are_refused(server_factory, store, url, status, error_type):
    _, _, clients = server_factory(model_store=str(store), enable_model_api=True,
                                   allowed_urls="file://.*")
    got_status, answer = clients["management"].json("POST", f"/models?url={url}")
    assert (got_status, answer["type"]) == (status, error_type)


def test_a_link_in_the_model_store_registers_as_torchserve_registers_it(server_factory, store,
                                                                         torchserve, tmp_path):
    """TorchServe's own test tooling links archives into the store; a path out stays refused."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "linked.mar").write_bytes((store / "ctl.mar").read_bytes())
    (store / "linked.mar").symlink_to(elsewhere / "linked.mar")
    engine, _, clients = server_factory(model_store=str(store), enable_model_api=True)
    status, answer = clients["management"].json("POST", "/models?url=linked.mar&model_name=lnk")
    assert status == 200, answer
    assert [m.name for m in engine.models()] == ["lnk"]
    (torchserve.store / "linked.mar").unlink(missing_ok=True)
    (torchserve.store / "linked.mar").symlink_to(elsewhere / "linked.mar")
    their_status, _ = torchserve.request("management", "models?url=linked.mar&model_name=lnk"
                                         "&initial_workers=1&synchronous=true", "POST")
    torchserve.request("management", "models/lnk", "DELETE")
    assert their_status == status
    status, answer = clients["management"].json("POST", "/models?url=../elsewhere/linked.mar")
    assert (status, answer["type"]) == (400, "BadRequestException")
    assert [m.name for m in engine.models()] == ["lnk"]


def test_the_model_api_is_off_unless_enabled(server_factory, store):
    engine, _, clients = server_factory(model_store=str(store))
    engine.register(store / "ctl.mar")
    for method, path in (("POST", "/models?url=resnet18.mar"), ("DELETE", "/models/ctl")):
        status, answer = clients["management"].json(method, path)
        assert (status, answer["type"]) == (405, "MethodNotAllowedException")
        # TorchServe's words first (clients match them), then what to set.
        assert answer["message"].startswith(
            "Requested method is not allowed, please refer to API document.")
        assert "enable_model_api=true" in answer["message"]
    assert clients["management"].json("GET", "/models/ctl")[0] == 200
    assert [m.name for m in engine.models()] == ["ctl"]  # nothing registered, nothing removed


def test_registering_without_the_key_registers_nothing_either_way(server_factory, store):
    from tests.support.helpers import Client

    engine, _, clients = server_factory(model_store=str(store), enable_model_api=True)
    keyed = clients["management"]
    anonymous = Client(f"http://{keyed.host}:{keyed.port}")
    for sync in ("true", "false"):
        for client, headers in ((anonymous, None), (keyed, {"Authorization": "Bearer wrong"})):
            status, answer = client.json(
                "POST", f"/models?url=ctl.mar&initial_workers=1&synchronous={sync}",
                headers=headers)
            assert (status, answer["type"]) == (400, "InvalidKeyException")
    time.sleep(0.5)  # an asynchronous registration would have shown by now
    assert engine.models() == [] and not engine.failures


def test_shapes_match_torchserve(server_factory, store, torchserve):
    engine, _, clients = server_factory(model_store=str(store))
    engine.register(store / "resnet18.mar")
    name = torchserve.register(store / "resnet18.mar")
    status, listed = clients["management"].json("GET", "/models/")  # a trailing slash, too
    their_status, their_listed = torchserve.request("management", "models/")
    assert (status, list(listed)) == (their_status, list(json.loads(their_listed))) == (200, ["models"])
    ours = clients["management"].json("GET", f"/models/{name}")[1][0]
    theirs = json.loads(torchserve.request("management", f"models/{name}")[1])[0]
    assert list(ours) == list(theirs)
    assert list(ours["workers"][0]) == list(theirs["workers"][0])
    assert list(ours["jobQueueStatus"]) == list(theirs["jobQueueStatus"])
    our_list = clients["management"].json("GET", "/models")[1]
    their_list = json.loads(torchserve.request("management", "models")[1])
    assert {"modelName": name, "modelUrl": "resnet18.mar"} in their_list["models"]
    assert list(our_list) == list(their_list) == ["models"]
    assert list(our_list["models"][0]) == list(their_list["models"][0])


def test_customized_describe_is_the_handlers_describe_handle(server_factory, torchserve, tmp_path):
    from tests.support import archives

    engine, _, clients = server_factory()
    mar = archives.described(tmp_path)
    engine.register(mar)
    name = torchserve.register(mar)
    status, ours = clients["management"].json("GET", "/models/described?customized=true")
    their_status, raw = torchserve.request("management", f"models/{name}?customized=true")
    theirs = json.loads(raw)
    assert status == their_status == 200
    assert ours[0]["customizedMetadata"] == theirs[0]["customizedMetadata"]
    assert ours[0]["customizedMetadata"] == {"data1": "1", "data2": "2"}
    assert "customizedMetadata" not in clients["management"].json("GET", "/models/described")[1][0]


SLOW_TO_LOAD = '''\
import time


class SlowToLoad:
    def initialize(self, context):
        time.sleep(2)

    def handle(self, data, context):
        return [row.get("body") for row in data]
'''


def test_synchronous_false_answers_202_at_once_as_torchserve_and_queues_until_loaded(
        server_factory, tmp_path, torchserve):
    from nbserve.store.archiver import archive

    (tmp_path / "slow_to_load.py").write_text(SLOW_TO_LOAD)
    mar = archive("slow", "1.0", str(tmp_path / "slow_to_load.py"), export_path=tmp_path)
    engine, _, clients = server_factory(model_store=str(tmp_path), enable_model_api=True)
    started = time.monotonic()
    status, answer = clients["management"].json(
        "POST", "/models?url=slow.mar&initial_workers=1&synchronous=false")
    assert time.monotonic() - started < 1.5  # before the handler's 2 s initialize
    shutil.copy(mar, torchserve.store / "slow.mar")
    their_status, theirs = torchserve.request(
        "management", "models?url=slow.mar&initial_workers=1&synchronous=false", "POST")
    assert (status, answer) == (their_status, json.loads(theirs)) == (
        202, {"status": "Processing worker updates..."})
    assert [m.name for m in engine.models()] == ["slow"]  # listed while it loads
    # A request sent now waits for the worker, then is answered.
    status, _, body = clients["inference"].call("POST", "/predictions/slow", b'"hi"',
                                                {"Content-Type": "application/json"})
    assert (status, body) == (200, b"hi")
    assert time.monotonic() - started >= 2
    time.sleep(1)
    torchserve.request("management", "models/slow", "DELETE")


def test_a_model_whose_workers_cannot_start_is_tried_again_then_removed_and_says_why(
        server_factory, tmp_path, capfd):
    """As TorchServe: each failed start is logged with its traceback and tried again after
    the backoff (0, 1, 1, 2... s) for maxRetryTimeoutInSec; then the model goes."""
    from nbserve.store.archiver import archive

    (tmp_path / "broken.py").write_text(
        "class Broken:\n    def initialize(self, context):\n        raise RuntimeError('no')\n\n"
        "    def handle(self, data, context):\n        return data\n")
    (tmp_path / "model-config.yaml").write_text("maxRetryTimeoutInSec: 3\n")
    archive("broken", "1.0", str(tmp_path / "broken.py"), export_path=tmp_path,
            config_file=str(tmp_path / "model-config.yaml"))
    engine, _, clients = server_factory(model_store=str(tmp_path), enable_model_api=True)
    status, _ = clients["management"].json(
        "POST", "/models?url=broken.mar&initial_workers=1&synchronous=false")
    assert status == 202
    deadline = time.monotonic() + 30
    while "broken" not in engine.failures and time.monotonic() < deadline:
        time.sleep(0.1)
    assert engine.models() == [] and "RuntimeError: no" in engine.failures["broken"].error
    said = capfd.readouterr().err
    assert "failed to start (attempt 3)" in said and "attempt 4" not in said, said
    status, answer = clients["management"].json("GET", "/models/broken")
    assert status == 500 and "failed to load" in answer["message"]
