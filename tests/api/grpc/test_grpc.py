"""TorchServe's gRPC APIs: a client generated from TorchServe 0.12's own proto files (taken
from its wheel's model-server.jar) calls every RPC on nbserve and on TorchServe, same archives."""

import contextlib
import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import grpc
import pytest
import requests

from nbserve.serving.engine import Engine
from tests.support import archives
from tests.support.helpers import nbserve_serve, start_server
from tests.support.jupyter_app import free_port

SITE = Path(grpc.__file__).parents[1]  # google/rpc/status.proto and google/protobuf/*.proto


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    """inference_pb2(_grpc) and management_pb2(_grpc), generated from TorchServe's files."""
    # Found, not imported: handlers' ``import ts...`` must keep meaning nbserve's shim here.
    jar_path = importlib.metadata.distribution("torchserve").locate_file(
        "ts/frontend/model-server.jar")
    folder = tmp_path_factory.mktemp("ts-stubs")
    with zipfile.ZipFile(jar_path) as jar:
        for name in ("proto/inference.proto", "proto/management.proto"):
            (folder / Path(name).name).write_bytes(jar.read(name))
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{folder}", f"-I{SITE}",
                    f"--python_out={folder}", f"--grpc_python_out={folder}",
                    str(folder / "inference.proto"), str(folder / "management.proto")],
                   check=True)
    sys.path.insert(0, str(folder))
    import inference_pb2
    import inference_pb2_grpc
    import management_pb2
    import management_pb2_grpc
    yield inference_pb2, inference_pb2_grpc, management_pb2, management_pb2_grpc
    sys.path.remove(str(folder))


class Client:
    """The two services of one server, through TorchServe's generated stubs."""

    def __init__(self, stubs, inference: str, management: str, keys: dict | None = None):
        self.pb, inference_grpc, self.mpb, management_grpc = stubs
        self.keys = keys or {}
        self.inference = inference_grpc.InferenceAPIsServiceStub(grpc.insecure_channel(inference))
        self.management = management_grpc.ManagementAPIsServiceStub(
            grpc.insecure_channel(management))

    def _metadata(self, kind):
        key = self.keys.get(kind)
        return (("authorization", f"Bearer {key}"),) if key else ()

    def call(self, rpc: str, request):
        service, kind = ((self.inference, "inference") if hasattr(self.inference, rpc)
                         else (self.management, "management"))
        return getattr(service, rpc)(request, metadata=self._metadata(kind), timeout=120)

    def predict(self, model: str, body: bytes, version: str = "") -> bytes:
        request = self.pb.PredictionsRequest(model_name=model, model_version=version,
                                             input={"data": body})
        return self.call("Predictions", request).prediction

    def code(self, rpc: str, request) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as raised:
            answer = self.call(rpc, request)
            list(answer) if not hasattr(answer, "ListFields") else answer
        return raised.value.code()


@pytest.fixture(scope="module")
def archives_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grpc-archives")
    return {"ctl": archives.controlled(folder / "ctl"),
            "resnet18": archives.classifier(folder / "classifier"),
            "streaming": archives.streaming(folder / "streaming")}


@pytest.fixture(scope="module")
def nbserve_grpc(stubs, archives_dir, tmp_path_factory):
    store = tmp_path_factory.mktemp("grpc-store")
    for path in archives_dir.values():
        shutil.copy(path, store / path.name)
    engine = Engine()
    for name in ("ctl", "resnet18", "streaming"):
        engine.register(store / archives_dir[name].name)
    ports = {"inference": free_port(), "management": free_port()}
    server, _ = start_server(engine, enable_grpc=True, enable_model_api=True,
                             model_store=str(store), max_request_size=1_000_000,
                             grpc_inference_port=ports["inference"],
                             grpc_management_port=ports["management"])
    yield Client(stubs, server.grpc.urls["inference"], server.grpc.urls["management"],
                 server.tokens.keys), server
    server.stop()
    engine.close()


@pytest.fixture(scope="module")
def torchserve_grpc(stubs, torchserve, archives_dir):
    for name in ("ctl", "resnet18", "streaming"):
        torchserve.register(archives_dir[name])
    return Client(stubs, f"127.0.0.1:{torchserve.grpc_ports['inference']}",
                  f"127.0.0.1:{torchserve.grpc_ports['management']}")


def both(nbserve_grpc, torchserve_grpc):
    return [nbserve_grpc[0], torchserve_grpc]


def test_ping_and_predictions_answer_as_torchserve_does(nbserve_grpc, torchserve_grpc, photos):
    ours, theirs = both(nbserve_grpc, torchserve_grpc)
    empty = __import__("google.protobuf.empty_pb2", fromlist=["Empty"]).Empty()
    assert json.loads(ours.call("Ping", empty).health) == json.loads(theirs.call("Ping", empty).health)
    body = json.dumps({"hello": "grpc"}).encode()
    assert json.loads(ours.predict("ctl", body)) == json.loads(theirs.predict("ctl", body))
    image = next(iter(photos.values()))
    mine, reference = json.loads(ours.predict("resnet18", image)), json.loads(theirs.predict("resnet18", image))
    assert list(mine) == list(reference)
    assert all(abs(mine[k] - reference[k]) < 1e-4 for k in reference)


def test_stream_predictions_streams_the_handlers_parts(nbserve_grpc, torchserve_grpc):
    ours, theirs = both(nbserve_grpc, torchserve_grpc)
    request = ours.pb.PredictionsRequest(model_name="streaming", input={"data": b"go"})
    mine = [r.prediction for r in ours.call("StreamPredictions", request)]
    reference = [r.prediction for r in theirs.call("StreamPredictions", request)]
    assert mine == reference and [p.decode() for p in mine] == archives.STREAMING_PARTS


@contextlib.contextmanager
def grpc_serving(stubs, source):
    """An engine serving ``source`` over gRPC on free ports, and a client holding its keys."""
    engine = Engine()
    engine.register(source)
    server, _ = start_server(engine, enable_grpc=True, grpc_inference_port=free_port(),
                             grpc_management_port=free_port())
    try:
        yield Client(stubs, server.grpc.urls["inference"], server.grpc.urls["management"],
                     server.tokens.keys)
    finally:
        server.stop()
        engine.close()


def test_stream_predictions_streams_a_language_models_tokens(stubs, chat_model):
    with grpc_serving(stubs, chat_model) as client:
        prompt = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        body = json.dumps({"prompt": prompt, "max_new_tokens": 40}).encode()
        request = client.pb.PredictionsRequest(model_name="chat", input={"data": body})
        parts = [r.prediction.decode() for r in client.call("StreamPredictions", request)]
        assert len(parts) > 3 and "".join(parts) == "Hello! How can I help you today?"


def test_stream_predictions2_serves_a_sequence_in_turn(stubs, tmp_path):
    """TorchServe's StreamPredictions2 on its stateful example: a stream's answers sum in
    order on one worker; a first request with neither an id nor the start flag fails in its
    own answer, and the stream goes on; a stream that starts a sequence learns its id."""
    with grpc_serving(stubs, archives.stateful(tmp_path)) as client:
        request = client.pb.PredictionsRequest

        def stream(*requests):
            return list(client.inference.StreamPredictions2(
                iter(requests), metadata=client._metadata("inference")))

        answers = stream(*(request(model_name="stateful", input={"body": str(n).encode()},
                                   sequence_id="seq_0") for n in (1, 3, 5)))
        assert [int(a.prediction.split()[0]) for a in answers] == [1, 4, 9]
        assert len({a.prediction.split()[1] for a in answers}) == 1  # one worker
        assert {a.sequence_id for a in answers} == {"seq_0"}
        refused, *started = stream(
            request(model_name="stateful", input={"body": b"1"}),
            request(model_name="stateful",
                    input={"body": b"2", "ts_request_sequence_start": b"true"}),
            request(model_name="stateful", input={"body": b"5"}))
        assert refused.status.code == grpc.StatusCode.INTERNAL.value[0]
        assert refused.status.message == "Parameter sequenceId is required."
        assert [int(a.prediction.split()[0]) for a in started] == [2, 7]
        assert started[0].sequence_id.startswith("ts-seq-")
        assert started[0].sequence_id == started[1].sequence_id


def test_errors_carry_the_status_that_says_what_happened(nbserve_grpc, torchserve_grpc):
    ours, theirs = both(nbserve_grpc, torchserve_grpc)
    unknown = ours.pb.PredictionsRequest(model_name="nope", input={"data": b"x"})
    assert ours.code("Predictions", unknown) == grpc.StatusCode.NOT_FOUND
    assert theirs.code("Predictions", unknown) == grpc.StatusCode.INTERNAL  # TorchServe's
    bad_image = ours.pb.PredictionsRequest(model_name="resnet18", input={"data": b"not an image"})
    assert ours.code("Predictions", bad_image) == grpc.StatusCode.INVALID_ARGUMENT
    too_large = ours.pb.PredictionsRequest(model_name="ctl", input={"data": b"x" * 2_000_000})
    assert ours.code("Predictions", too_large) == grpc.StatusCode.RESOURCE_EXHAUSTED
    missing = ours.mpb.DescribeModelRequest(model_name="nope")
    assert ours.code("DescribeModel", missing) == grpc.StatusCode.NOT_FOUND


def test_the_keys_are_asked_for_in_the_metadata(nbserve_grpc):
    client, server = nbserve_grpc
    request = client.pb.PredictionsRequest(model_name="ctl", input={"data": b"{}"})
    with pytest.raises(grpc.RpcError) as raised:
        client.inference.Predictions(request, timeout=30)  # no key
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as raised:
        client.management.ListModels(client.mpb.ListModelsRequest(),
                                     metadata=client._metadata("inference"), timeout=30)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED  # the inference key won't do
    assert len(server.engine.models()) == 3


def test_changes_without_the_management_key_change_nothing(nbserve_grpc):
    client, server = nbserve_grpc
    engine, mpb = server.engine, client.mpb
    workers = len(engine.get("ctl").workers)
    wrong = (("authorization", "Bearer not-the-key"),)
    calls = [
        (client.management.RegisterModel, mpb.RegisterModelRequest(
            url="ctl.mar", model_name="intruder", initial_workers=1, synchronous=True), ()),
        (client.management.ScaleWorker, mpb.ScaleWorkerRequest(
            model_name="ctl", min_worker=workers + 2, synchronous=True), wrong),
        (client.management.SetDefault, mpb.SetDefaultRequest(model_name="ctl",
                                                              model_version="1.0"), wrong),
        (client.management.UnregisterModel, mpb.UnregisterModelRequest(model_name="ctl"),
         client._metadata("inference")),
    ]
    for rpc, request, metadata in calls:
        with pytest.raises(grpc.RpcError) as raised:
            rpc(request, metadata=metadata, timeout=60)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED, rpc
    assert sorted(m.name for m in engine.models()) == ["ctl", "resnet18", "streaming"]
    assert len(engine.get("ctl").workers) == workers  # no worker added
    assert json.loads(client.predict("ctl", b"{}"))["tag"] == "v1"  # still served, as it was


def test_management_rpcs_answer_as_torchserve_does(nbserve_grpc, torchserve_grpc, archives_dir,
                                                   torchserve):
    ours, theirs = both(nbserve_grpc, torchserve_grpc)
    mpb = ours.mpb
    # The session's TorchServe serves other tests' models too: compare these three, and paging.
    # (limit=100 said: TorchServe lists none for an unset limit, nbserve its documented 100.)
    ours_listed, theirs_listed = (
        json.loads(c.call("ListModels", mpb.ListModelsRequest(limit=100)).msg) for c in (ours, theirs))
    assert json.loads(ours.call("ListModels", mpb.ListModelsRequest()).msg) == ours_listed
    assert ours_listed["models"] == [m for m in theirs_listed["models"]
                                     if m["modelName"] in ("ctl", "resnet18", "streaming")]
    assert json.loads(ours.call("ListModels", mpb.ListModelsRequest(limit=2)).msg) == {
        "nextPageToken": "2", "models": ours_listed["models"][:2]}
    described = [json.loads(c.call("DescribeModel", mpb.DescribeModelRequest(model_name="ctl")).msg)[0]
                 for c in (ours, theirs)]
    for key in ("modelName", "modelVersion", "modelUrl", "runtime", "minWorkers", "maxWorkers"):
        assert described[0][key] == described[1][key], key
    shutil.copy(archives_dir["ctl"], torchserve.store / "ctl2.mar")
    answers = []
    for client in (ours, theirs):
        steps = [
            ("RegisterModel", mpb.RegisterModelRequest(url="ctl.mar" if client is ours else "ctl2.mar",
                                                       model_name="again", initial_workers=1,
                                                       synchronous=True)),
            ("ScaleWorker", mpb.ScaleWorkerRequest(model_name="again", min_worker=2,
                                                   synchronous=True)),
            ("SetDefault", mpb.SetDefaultRequest(model_name="again", model_version="1.0")),
            ("UnregisterModel", mpb.UnregisterModelRequest(model_name="again")),
        ]
        answers.append([client.call(rpc, request).msg for rpc, request in steps])
    assert answers[0] == answers[1]
    assert ours.code("DescribeModel", mpb.DescribeModelRequest(model_name="again")) \
        == grpc.StatusCode.NOT_FOUND


GRPC_CLIENT = '''
import sys
import grpc
import requests
import inference_pb2, inference_pb2_grpc, management_pb2, management_pb2_grpc

inference_address, management_address, key_file, image = sys.argv[1:5]
import json
keys = json.load(open(key_file))
def meta(kind):
    return (("authorization", "Bearer " + keys[kind]["key"]),)

management = management_pb2_grpc.ManagementAPIsServiceStub(grpc.insecure_channel(management_address))
inference = inference_pb2_grpc.InferenceAPIsServiceStub(grpc.insecure_channel(inference_address))
registered = management.RegisterModel(management_pb2.RegisterModelRequest(
    url="resnet18.mar", model_name="resnet18", initial_workers=1, synchronous=True),
    metadata=meta("management")).msg
answer = inference.Predictions(inference_pb2.PredictionsRequest(
    model_name="resnet18", input={"data": open(image, "rb").read()}), metadata=meta("inference"))
unregistered = management.UnregisterModel(
    management_pb2.UnregisterModelRequest(model_name="resnet18"), metadata=meta("management")).msg
print(json.dumps({"registered": registered, "prediction": json.loads(answer.prediction),
                  "unregistered": unregistered}))
'''


def test_torchserves_grpc_client_script_works_against_nbserve_serve(stubs, archives_dir, tmp_path,
                                                                   photos):
    """What ts_scripts/torchserve_grpc_client.py does (register, infer, unregister), with
    only the stubs generated from TorchServe's files, against ``nbserve serve``, which serves
    gRPC unasked, as TorchServe does."""
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(archives_dir["resnet18"], store / "resnet18.mar")
    (tmp_path / "kitten.jpg").write_bytes(next(iter(photos.values())))
    grpc_ports = [free_port(), free_port()]
    config = tmp_path / "config.properties"
    config.write_text(f"grpc_inference_port={grpc_ports[0]}\ngrpc_management_port={grpc_ports[1]}\n"
                      "enable_model_api=true\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "nbserve", "serve", "--model-store", str(store),
         "--ts-config", str(config),
         *(f"--{api}-address=http://127.0.0.1:{free_port()}" for api in
           ("inference", "management", "metrics"))],
        stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    log = []
    while not any("metrics API at" in line for line in log):
        line = process.stderr.readline()
        assert line, "".join(log)
        log.append(line)
    assert any(f"gRPC inference API at 127.0.0.1:{grpc_ports[0]}" in line for line in log), log
    try:
        script = tmp_path / "client.py"
        script.write_text(GRPC_CLIENT)
        stub_folder = Path(stubs[0].__file__).parent
        run = subprocess.run([sys.executable, str(script), f"127.0.0.1:{grpc_ports[0]}",
                              f"127.0.0.1:{grpc_ports[1]}", str(tmp_path / "key_file.json"),
                              str(tmp_path / "kitten.jpg")], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(stub_folder)}, timeout=300)
        assert run.returncode == 0, run.stderr
        answers = json.loads(run.stdout)
        assert answers["registered"] == ('Model "resnet18" Version: 1.0 registered '
                                         "with 1 initial workers")
        assert len(answers["prediction"]) == 5
        assert answers["unregistered"] == 'Model "resnet18" unregistered'
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def test_a_second_server_cannot_share_the_grpc_ports(stubs, archives_dir, tmp_path):
    """gRPC's SO_REUSEPORT is off: a second ``nbserve serve`` on the same gRPC ports fails
    naming the setting, and every call made with the first server's key reaches the first."""
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(archives_dir["ctl"], store / "ctl.mar")
    config = tmp_path / "config.properties"
    grpc_ports = [free_port(), free_port()]
    config.write_text(f"grpc_inference_port={grpc_ports[0]}\ngrpc_management_port={grpc_ports[1]}\n")
    flags = ("--grpc", "--model-store", str(store), "--models", "ctl=ctl.mar",
             "--ts-config", str(config))
    first, _, _ = nbserve_serve(*flags, cwd=tmp_path / "store")
    try:
        keys = {kind: entry["key"] for kind, entry in
                json.loads((store / "key_file.json").read_text()).items()}
        (tmp_path / "second").mkdir()
        with pytest.raises(AssertionError) as second:
            nbserve_serve(*flags, cwd=tmp_path / "second")
        assert "grpc_inference_port" in str(second.value) and "in use" in str(second.value)
        client = Client(stubs, f"127.0.0.1:{grpc_ports[0]}", f"127.0.0.1:{grpc_ports[1]}", keys)
        answers = [client.predict("ctl", b"[1, 2]") for _ in range(40)]
        assert len(set(answers)) == 1
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(60)


def test_grpc_unasked_on_taken_ports_warns_and_rest_serves_and_no_grpc_turns_it_off(
        stubs, archives_dir, tmp_path):
    """gRPC by default is TorchServe's behaviour, not a requirement: a second ``nbserve serve``
    whose gRPC ports are taken says so and serves REST; ``--no-grpc`` serves no gRPC at all."""
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(archives_dir["ctl"], store / "ctl.mar")
    config = tmp_path / "config.properties"
    grpc_ports = [free_port(), free_port()]
    config.write_text(f"grpc_inference_port={grpc_ports[0]}\n"
                      f"grpc_management_port={grpc_ports[1]}\ndisable_token_authorization=true\n")
    flags = ("--model-store", str(store), "--models", "ctl=ctl.mar", "--ts-config", str(config))
    first, _, _ = nbserve_serve(*flags, cwd=tmp_path)
    try:
        second, ports, said = nbserve_serve(*flags, cwd=tmp_path)
        try:
            assert any("warning: gRPC is not served" in line and "in use" in line
                       for line in said), said
            answer = requests.get(f"http://127.0.0.1:{ports['inference']}/ping", timeout=60)
            assert answer.json() == {"status": "Healthy"}, answer.text
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(60)
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(60)
    third, _, said = nbserve_serve(*flags, "--no-grpc", cwd=tmp_path)
    try:
        assert not any("gRPC" in line for line in said), said
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", grpc_ports[0])) != 0
    finally:
        third.send_signal(signal.SIGTERM)
        third.wait(60)


def test_every_management_call_is_answered_alike_over_rest_and_grpc(stubs, archives_dir,
                                                                     tmp_path):
    """Both APIs call one management core: each call below runs on REST against model "rest"
    and on gRPC against model "grpc"; the answers (or the errors and their messages) match, and
    so does what the call did to its model."""
    shutil.copy(archives_dir["ctl"], tmp_path / "ctl.mar")
    engine = Engine()
    ports = {"inference": free_port(), "management": free_port()}
    server, clients = start_server(engine, enable_grpc=True, enable_model_api=True,
                                   model_store=str(tmp_path),
                                   grpc_inference_port=ports["inference"],
                                   grpc_management_port=ports["management"])
    stub = Client(stubs, server.grpc.urls["inference"], server.grpc.urls["management"],
                  server.tokens.keys)

    def rest(method, path):
        status, _, raw = clients["management"].call(method, path)
        answer = json.loads(raw)
        if isinstance(answer, dict) and ("message" in answer or "status" in answer):
            return status, answer.get("message", answer.get("status"))  # gRPC's msg or details
        return status, answer

    def rpc(name, **fields):
        try:
            msg = stub.call(name, getattr(stub.mpb, f"{name}Request")(**fields)).msg
        except grpc.RpcError as error:
            return error.code(), error.details()
        try:
            return grpc.StatusCode.OK, json.loads(msg)
        except ValueError:
            return grpc.StatusCode.OK, msg

    def workers(model):
        return len(engine.get(model).workers)

    OK = grpc.StatusCode.OK
    calls = [  # what; the call over REST, over gRPC (for model m); their statuses; what it did
        ("register", lambda m: rest("POST", f"/models?url=ctl.mar&model_name={m}"
                                            "&initial_workers=1&synchronous=true"),
         lambda m: rpc("RegisterModel", url="ctl.mar", model_name=m, initial_workers=1,
                       synchronous=True), 200, OK, lambda m: workers(m) == 1),
        ("register twice", lambda m: rest("POST", f"/models?url=ctl.mar&model_name={m}"),
         lambda m: rpc("RegisterModel", url="ctl.mar", model_name=m), 409,
         grpc.StatusCode.ALREADY_EXISTS, lambda m: workers(m) == 1),
        ("register, no url", lambda m: rest("POST", f"/models?model_name={m}"),
         lambda m: rpc("RegisterModel", model_name=m), 400, grpc.StatusCode.INVALID_ARGUMENT,
         None),
        ("register, not in the store", lambda m: rest("POST", "/models?url=nope.mar"),
         lambda m: rpc("RegisterModel", url="nope.mar"), 404, grpc.StatusCode.NOT_FOUND, None),
        ("describe", lambda m: rest("GET", f"/models/{m}"),
         lambda m: rpc("DescribeModel", model_name=m), 200, OK, None),
        ("list", lambda m: rest("GET", "/models?limit=1"), lambda m: rpc("ListModels", limit=1),
         200, OK, None),
        ("scale", lambda m: rest("PUT", f"/models/{m}?min_worker=2&synchronous=true"),
         lambda m: rpc("ScaleWorker", model_name=m, min_worker=2, synchronous=True), 200, OK,
         lambda m: workers(m) == 2),
        ("scale, max below min", lambda m: rest("PUT", f"/models/{m}?min_worker=3&max_worker=1"),
         lambda m: rpc("ScaleWorker", model_name=m, min_worker=3, max_worker=1), 400,
         grpc.StatusCode.INVALID_ARGUMENT, lambda m: workers(m) == 2),
        ("scale behind the answer", lambda m: rest("PUT", f"/models/{m}?min_worker=1"),
         lambda m: rpc("ScaleWorker", model_name=m, min_worker=1), 202, OK,
         lambda m: wait_until(lambda: workers(m) == 1)),
        ("set an unknown default", lambda m: rest("PUT", f"/models/{m}/9.9/set-default"),
         lambda m: rpc("SetDefault", model_name=m, model_version="9.9"), 404,
         grpc.StatusCode.NOT_FOUND, None),
        ("set the default", lambda m: rest("PUT", f"/models/{m}/1.0/set-default"),
         lambda m: rpc("SetDefault", model_name=m, model_version="1.0"), 200, OK, None),
        ("unregister", lambda m: rest("DELETE", f"/models/{m}"),
         lambda m: rpc("UnregisterModel", model_name=m), 200, OK,
         lambda m: m not in [served.name for served in engine.models()]),
        ("unregister again", lambda m: rest("DELETE", f"/models/{m}"),
         lambda m: rpc("UnregisterModel", model_name=m), 404, grpc.StatusCode.NOT_FOUND, None),
    ]
    try:
        for what, over_rest, over_grpc, status, code, did in calls:
            by_rest, by_grpc = over_rest("rest"), over_grpc("grpc")
            assert (by_rest[0], by_grpc[0]) == (status, code), (what, by_rest, by_grpc)
            if what == "describe":  # two models' workers: their ids, pids and start times differ
                for answer in (by_rest[1], by_grpc[1]):
                    for worker in answer[0]["workers"]:
                        assert worker.pop("id") and worker.pop("pid") and worker.pop("startTime")
            if what != "list":  # the same answer, but for the model's name
                by_grpc = by_grpc[0], json.loads(re.sub(r"\bgrpc\b", "rest", json.dumps(by_grpc[1])))
            assert by_grpc[1] == by_rest[1], (what, by_rest, by_grpc)
            if did is not None:
                assert did("rest") and did("grpc"), what
    finally:
        server.stop()
        engine.close()


def wait_until(condition, timeout=60) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
