"""TorchServe 0.12's token authorization over real HTTP: each key opens its own API only, keys
expire and rotate, and a request without its key changes nothing."""

import json
import shutil
import stat
import subprocess
import time

import pytest

from tests.support import archives
from tests.support.helpers import Client


@pytest.fixture
def served(server_factory, tmp_path):
    """A server with the model API on and the controllable model ``ctl`` registered."""
    engine, server, clients = server_factory(enable_model_api=True, model_store=str(tmp_path))
    shutil.copy(archives.controlled(tmp_path / "made"), tmp_path / "ctl.mar")
    engine.register(tmp_path / "ctl.mar")
    return engine, server, clients


def test_on_by_default_and_a_request_without_its_key_changes_nothing(served):
    engine, server, clients = served
    management = Client(server.urls["management"])  # no key
    keys = server.tokens.keys
    refused = [management.call("DELETE", "/models/ctl"),
               management.call("PUT", "/models/ctl?min_worker=3&synchronous=true"),
               management.call("POST", "/models?url=ctl.mar&model_name=intruder"),
               management.call("PUT", "/models/ctl/1.0/set-default"),
               management.call("GET", "/token?type=inference"),
               Client(server.urls["inference"]).call("POST", "/predictions/ctl", b"1"),
               Client(server.urls["inference"]).call("POST", "/explanations/ctl", b"1"),
               Client(server.urls["inference"]).call("POST", "/v1/models/ctl:explain",
                                                     b'{"instances": [1]}')]
    for status, headers, body in refused:
        answer = json.loads(body)
        assert (status, answer["type"]) == (400, "InvalidKeyException")
        assert {k.lower(): v for k, v in headers.items()}["www-authenticate"].startswith("Bearer")
        assert not any(key.encode() in body for key in keys.values())
    assert [m.name for m in engine.models()] == ["ctl"]
    version = engine.get("ctl")
    assert len(version.workers) == 1 and version.stats.requests == 0
    assert server.tokens.keys == keys  # no key was replaced


def test_each_key_opens_its_own_api_only(served):
    _, server, clients = served
    keys = server.tokens.keys
    inference, management = clients["inference"], clients["management"]
    for client, right in ((inference, "inference"), (management, "management")):
        for kind, key in keys.items():
            status = client.call("GET", "/ping" if right == "inference" else "/models",
                                 headers={"Authorization": f"Bearer {key}"})[0]
            assert status == (200 if kind == right else 400), (right, kind)
    # TorchServe's header is "Bearer <key>"; the bare key, or a Basic one, is not accepted.
    assert inference.call("GET", "/ping", headers={"Authorization": keys["inference"]})[0] == 400
    assert management.call("GET", "/token?type=inference",
                           headers={"Authorization": f"Bearer {keys['management']}"})[0] == 400
    assert server.tokens.keys == keys  # the management key cannot replace a key
    assert clients["metrics"].call("GET", "/metrics")[0] == 200  # as TorchServe: no key


def test_the_token_api_rotates_a_key_and_writes_it_to_the_key_file(served):
    _, server, clients = served
    old = server.tokens.keys
    rotate = Client(server.urls["management"], old["API"])
    status, answer = rotate.json("GET", "/token?type=inference")
    new_key = answer["inference"]["key"]
    assert status == 200 and new_key != old["inference"]
    on_disk = json.loads(server.tokens.key_file.read_text())
    assert on_disk["inference"]["key"] == new_key
    assert on_disk["management"]["key"] == old["management"]
    inference = clients["inference"]
    assert inference.call("GET", "/ping")[0] == 400  # the old key
    assert inference.call("GET", "/ping", headers={"Authorization": f"Bearer {new_key}"})[0] == 200
    assert rotate.json("GET", "/token?type=API")[0] == 400


def test_keys_expire_after_token_expiration_min(server_factory):
    _, server, clients = server_factory(token_expiration_min=1 / 60)  # one second
    assert clients["inference"].call("GET", "/ping")[0] == 200
    time.sleep(1.2)
    assert clients["inference"].call("GET", "/ping")[0] == 400
    status, answer = Client(server.urls["management"], server.tokens.keys["API"]).json(
        "GET", "/token?type=inference")
    fresh = Client(server.urls["inference"], answer["inference"]["key"])
    assert fresh.call("GET", "/ping")[0] == 200


def test_the_key_file_is_private_has_torchserves_shape_and_goes_at_shutdown(server_factory):
    _, server, _ = server_factory()
    key_file = server.tokens.key_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    entries = json.loads(key_file.read_text())
    assert list(entries) == ["management", "inference", "API"]
    assert set(entries["inference"]) == {"key", "expiration time"}
    assert entries["inference"]["expiration time"].endswith("Z")
    server.stop(timeout=5)
    assert not key_file.exists()


def test_off_with_disable_token_authorization(server_factory):
    _, server, clients = server_factory(disable_token_authorization=True)
    assert server.tokens is None
    assert Client(server.urls["management"]).call("GET", "/models")[0] == 200


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_torchserves_own_clients_work_given_the_key(served, photos):
    """curl as TorchServe's documentation writes it, and requests."""
    import requests

    _, server, _ = served
    keys = server.tokens.keys
    listing = subprocess.run(["curl", "-s", f"{server.urls['management']}/models",
                              "-H", f"Authorization: Bearer {keys['management']}"],
                             capture_output=True, text=True, timeout=30)
    assert json.loads(listing.stdout)["models"][0]["modelName"] == "ctl"
    answer = requests.post(f"{server.urls['inference']}/predictions/ctl", json={"x": 1},
                           headers={"Authorization": f"Bearer {keys['inference']}"}, timeout=30)
    assert answer.status_code == 200 and answer.json()["echo"] == {"x": 1}
