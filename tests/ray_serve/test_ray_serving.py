"""Deploying from a notebook or ``nbserve serve``: scaling, failures, shutting down, and what
happens without Ray."""

import os
import signal
import subprocess
import sys

import pytest
from ray import serve

from nbserve import ray_serve
from nbserve.errors import InferenceError, NBServeError
from tests.support import archives
from tests.support.helpers import RoutedClient, Stream, assert_same_answer


def echo_archive(folder):
    """A model with no weights: it answers each request with its body's length."""
    (folder / "echo.py").write_text(
        "def handle(data, context):\n"
        "    return None if data is None else [{'bytes': len(row['body'])} for row in data]\n")
    return archives.make_archive(folder, "echo", "echo.py")


def test_scaled_to_one_and_back_under_a_stream(on_ray, classifier_on_ray, ray_client, photos):
    with Stream(ray_client, "/predictions/resnet18", photos["cat.jpg"]) as stream:
        assert on_ray.scale("resnet18", 1).replicas == 1
        assert on_ray.state("resnet18")["replicaStates"] == {"RUNNING": 1}
        on_ray.scale("resnet18", 2)
        assert on_ray.state("resnet18")["replicaStates"] == {"RUNNING": 2}
    assert stream.failures == [] and len(stream.statuses) > 0


def test_predict_from_the_deploying_process(on_ray, classifier_on_ray, engine, classifier_mar, photos):
    if "resnet18" not in [m.name for m in engine.models()]:
        engine.register(classifier_mar)
    assert_same_answer(on_ray.predict("resnet18", photos["cat.jpg"]),
                       engine.predict("resnet18", photos["cat.jpg"]))
    with pytest.raises(InferenceError, match="not an image") as failed:
        on_ray.predict("resnet18", b"not an image")
    assert failed.value.status == 400 and failed.value.model_name == "resnet18"


def test_a_model_that_cannot_load_is_an_error_and_leaves_nothing(on_ray, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "broken_handler.py").write_text("raise ImportError('no module named secret_sauce')\n")
    broken = archives.make_archive(folder, "broken", "broken_handler.py")
    with pytest.raises(NBServeError, match="(?s)broken did not start on Ray.*secret_sauce"):
        on_ray.deploy(broken, num_cpus=0)  # the 2 CPUs hold resnet18's replicas
    assert "nbserve:broken" not in serve.status().applications
    assert "broken" not in on_ray.models


def test_shutdown_deletes_what_it_deployed(ray_cluster, on_ray, classifier_on_ray, tmp_path):
    echo = echo_archive(tmp_path)
    # A second deployer, as a second kernel is.
    other = ray_serve.connect(ray_cluster.address, key_file=tmp_path / "key_file.json")
    model = other.deploy(echo, model_name="echo", min_replicas=1, max_replicas=2, num_cpus=0)
    assert model.describe_placement() == "1-2 replicas, 0 CPU each"
    assert other.state("echo")["replicaStates"] == {"RUNNING": 1}  # autoscaling, idle
    assert other.tokens.keys == on_ray.tokens.keys  # one ingress, one set of keys
    client = RoutedClient(other.url, other.tokens.keys)
    assert client.json("POST", "/predictions/echo", b"12345") == (200, {"bytes": 5})
    other.shutdown()
    applications = serve.status().applications
    assert "nbserve:echo" not in applications
    assert {"nbserve", "nbserve:resnet18"} <= set(applications)  # another deployer's are kept


def test_without_ray_serving_on_ray_says_how_to_get_it(classifier_mar):
    hide_ray = ("import sys; sys.modules['ray'] = None; "
                "from nbserve.cli.main import main; sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", hide_ray, "serve", "--models", str(classifier_mar),
                             "--on", "ray"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "pip install 'nbserve[ray]'" in result.stderr


def test_a_model_without_room_on_the_cluster_says_so(on_ray, classifier_on_ray, tmp_path):
    echo = echo_archive(tmp_path)
    on_ray.startup_timeout = 12  # Ray names what is missing after 5 s (see ray_cluster.py)
    try:
        with pytest.raises(NBServeError, match="(?s)echo did not start on Ray within 12 s.*CPU"):
            on_ray.deploy(echo, replicas=1, num_cpus=2)  # the 2 CPUs hold resnet18's replicas
    finally:
        on_ray.startup_timeout = 120
    assert "nbserve:echo" not in serve.status().applications


def test_nbserve_serve_on_ray_through_ray_client_then_sigterm(ray_cluster, on_ray, classifier_mar,
                                                              engine, photos, tmp_path):
    command = [sys.executable, "-m", "nbserve", "serve", "--models", f"cli18={classifier_mar}",
               "--on", "ray", "--ray-address", ray_cluster.client_address, "--replicas", "1",
               "--num-cpus", "0"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = []
        while not any("management APIs at" in line for line in lines):
            line = process.stderr.readline()
            assert line, f"nbserve serve exited: {''.join(lines)}"
            lines.append(line)
        assert f"cli18 1.0 on Ray (1 replica, 0 CPU each): {on_ray.url}/predictions/cli18" in "".join(lines)
        assert any(f"keys are in {tmp_path / 'key_file.json'}" in line for line in lines), lines
        client = RoutedClient(on_ray.url, on_ray.tokens.keys)
        status, answer = client.json("POST", "/predictions/cli18", photos["cat.jpg"])
        if "resnet18" not in [m.name for m in engine.models()]:
            engine.register(classifier_mar)
        assert status == 200
        assert_same_answer(answer, engine.predict("resnet18", photos["cat.jpg"]))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "nbserve:cli18" not in serve.status().applications
    assert client.call("POST", "/predictions/cli18", photos["cat.jpg"])[0] == 404
