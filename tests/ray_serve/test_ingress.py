"""TorchServe's and KServe's paths on Ray Serve's proxy, against nbserve's own server on the
same archive: same answers, same JSON shapes, same errors."""

import base64
import json

from tests.support.archives import not_images
from tests.support.helpers import Client, assert_same_answer


def test_predictions_equal_the_engines(ray_client, local_clients, photos):
    for name in ("cat.jpg", "astronaut.jpg", "coffee.png", "camera-gray.png", "astronaut-rgba.png"):
        ray_status, ray_answer = ray_client.json("POST", "/predictions/resnet18", photos[name])
        local_status, local_answer = local_clients["inference"].json(
            "PUT", "/predictions/resnet18/1.0", photos[name])
        assert ray_status == local_status == 200, (name, ray_answer)
        assert_same_answer(ray_answer, local_answer)


def test_multipart_and_kserve_paths_equal_the_engines(ray_client, local_clients, photos):
    boundary = "nbserve-test"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"data\"; filename=\"cat.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + photos["cat.jpg"] + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    image = base64.b64encode(photos["coffee.png"]).decode()
    calls = [
        ("POST", "/predictions/resnet18", form, headers),
        ("POST", "/v1/models/resnet18:predict", json.dumps({"instances": [{"data": image}]}), {}),
        ("POST", "/v2/models/resnet18/infer", json.dumps(
            {"id": "r1", "inputs": [{"name": "coffee", "shape": [1], "datatype": "BYTES",
                                     "data": [image]}]}), {}),
        ("GET", "/v1/models/resnet18", None, {}),
        ("GET", "/v2/models/resnet18", None, {}),
        ("GET", "/v2/models/resnet18/ready", None, {}),
        ("GET", "/v2/health/ready", None, {}),
        ("GET", "/ping", None, {}),
    ]
    for method, path, body, headers in calls:
        ours = ray_client.json(method, path, body, headers)
        theirs = local_clients["inference"].json(method, path, body, headers)
        assert ours[0] == theirs[0] == 200, (path, ours)
        if path == "/v1/models/resnet18":  # OpenAI's card's "created": when each began serving
            ours[1].pop("created"), theirs[1].pop("created")
        assert_same_answer(ours[1], theirs[1])


def test_models_are_listed_and_described_with_their_replicas(ray_client, local_clients):
    assert ray_client.json("GET", "/models") == (
        200, {"models": [{"modelName": "resnet18", "modelUrl": "resnet18.mar"}]})
    status, described = ray_client.json("GET", "/models/resnet18")
    _, local = local_clients["management"].json("GET", "/models/resnet18")
    assert status == 200 and len(described) == 1
    replicas = described[0].pop("replicas")
    assert list(described[0]) == list(local[0])
    assert described[0]["modelVersion"] == "1.0"
    assert replicas["status"] == "HEALTHY" and replicas["replicaStates"] == {"RUNNING": 2}


def test_errors_are_torchserves_json(ray_client, local_clients, photos):
    for i, (name, body) in enumerate(not_images(photos).items()):
        known_as = {"X-Request-ID": f"not-an-image-{i}"}  # each error JSON names it
        ours = ray_client.json("POST", "/predictions/resnet18", body, known_as)
        theirs = local_clients["inference"].json("POST", "/predictions/resnet18", body, known_as)
        assert ours == theirs and ours[0] == 400 and ours[1]["request_id"] == f"not-an-image-{i}", name
    cases = [
        ("POST", "/predictions/nowhere", b"x", 404, "ModelNotFoundException"),
        ("GET", "/models/nowhere", None, 404, "ModelNotFoundException"),
        ("POST", "/predictions/resnet18/9.9", photos["cat.jpg"], 404, "ModelVersionNotFoundException"),
        ("GET", "/predictions/resnet18", None, 405, "MethodNotAllowedException"),
        ("POST", "/models?url=resnet18.mar", None, 405, "MethodNotAllowedException"),
        ("DELETE", "/models/resnet18", None, 405, "MethodNotAllowedException"),
        ("POST", "/predictions/resnet18", b"\0" * 7_000_000, 413, "RequestEntityTooLargeException"),
        ("GET", "/nowhere", None, 404, "ModelNotFoundException"),
    ]
    for method, path, body, code, type_ in cases:
        status, answer = ray_client.json(method, path, body)
        assert (status, answer["code"], answer["type"]) == (code, code, type_), (path, answer)
        assert answer["message"]
    assert ray_client.json("GET", "/models/resnet18")[0] == 200  # and the model is still there


def test_a_bad_input_does_not_fail_its_neighbours(ray_client, photos):
    from concurrent.futures import ThreadPoolExecutor

    bodies = [photos["cat.jpg"], b"not an image", photos["coffee.png"], b"", photos["noise.jpg"]] * 4
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda b: ray_client.call("POST", "/predictions/resnet18", b)[0], bodies))
    assert statuses == [200, 400, 200, 400, 200] * 4


def test_a_streaming_answer_goes_through_ray_as_it_is_sent(on_ray, tmp_path):
    from tests.support import archives
    from tests.support.helpers import timed_chunks

    on_ray.deploy(archives.streaming(tmp_path), num_cpus=0)  # the classifier holds both CPUs
    try:
        status, pieces = timed_chunks(f"{on_ray.url}/predictions/streaming", {
            "Authorization": f"Bearer {on_ray.tokens.keys['inference']}"})
        assert status == 200
        assert b"".join(c for _, c in pieces).decode() == "".join(archives.STREAMING_PARTS)
        assert pieces[0][0] < pieces[-1][0] - 0.5  # the first part long before the answer
    finally:
        on_ray.undeploy("streaming")


MARKING_PY = """\
def handle(data, context):
    if data is None:
        return None
    with open({mark!r}, "a") as f:
        f.write("ran\\n" * len(data))
    return ["ran" for _ in data]
"""


def test_without_the_key_or_from_a_foreign_host_or_origin_nothing_runs(on_ray, tmp_path):
    """Ray's proxy runs the checks the kernel's servers run: no key or the wrong API's key is
    400, a foreign Host (DNS rebinding) or cross-site Origin is 403, and the model never ran
    (it marks a file each time it does)."""
    from tests.support import archives

    mark = tmp_path / "ran.txt"
    (tmp_path / "marking.py").write_text(MARKING_PY.format(mark=str(mark)))
    on_ray.deploy(archives.make_archive(tmp_path, "marking", "marking.py"), num_cpus=0)
    try:
        keys = on_ray.tokens.keys
        assert json.loads(on_ray.tokens.key_file.read_text())["inference"]["key"] == \
            keys["inference"]
        anonymous = Client(on_ray.url)
        for key in (None, "wrong", keys["management"]):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            status, answer = anonymous.json("POST", "/predictions/marking", b"x", headers)
            assert (status, answer["type"]) == (400, "InvalidKeyException"), answer
        for key in (None, keys["inference"]):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            assert anonymous.json("GET", "/models", None, headers)[0] == 400
        with_key = {"Authorization": f"Bearer {keys['inference']}"}
        for hostile in ({"Host": "attacker.example"}, {"Origin": "http://attacker.example"}):
            status, answer = anonymous.json("POST", "/predictions/marking", b"x",
                                            {**with_key, **hostile})
            assert (status, answer["type"]) == (403, "ForbiddenException"), (hostile, answer)
        assert not mark.exists()
        assert anonymous.call("POST", "/predictions/marking", b"x", with_key)[::2] == (200, b"ran")
        assert mark.read_text() == "ran\n"
    finally:
        on_ray.undeploy("marking")
