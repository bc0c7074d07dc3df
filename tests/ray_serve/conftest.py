"""A classifier archive on the tests' local Ray cluster with 2 replicas, deployed from this
process, and the same archive on nbserve's own engine and HTTP server to compare against."""

import pytest

from nbserve.serving.engine import Engine
from tests.support.helpers import RoutedClient, start_server


@pytest.fixture(scope="session")
def on_ray(ray_cluster, tmp_path_factory):
    from nbserve import ray_serve

    serving = ray_serve.connect(ray_cluster.address, http_address=ray_cluster.http_address,
                                key_file=tmp_path_factory.mktemp("ray-keys") / "key_file.json")
    yield serving
    serving.shutdown()


@pytest.fixture(scope="session")
def classifier_on_ray(on_ray, classifier_mar):
    """resnet18 on 2 replicas; a test that scales it or kills a replica leaves it at 2."""
    return on_ray.deploy(classifier_mar, replicas=2)


@pytest.fixture(scope="session")
def ray_client(on_ray, classifier_on_ray):
    return RoutedClient(on_ray.url, on_ray.tokens.keys)


@pytest.fixture(scope="session")
def local_clients(classifier_mar):
    """The same archive served by nbserve in this process: inference and management clients."""
    with Engine() as engine:
        engine.register(classifier_mar)
        server, clients = start_server(engine)
        yield clients
        server.stop(timeout=5)
