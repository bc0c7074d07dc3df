"""An engine and its HTTP server on free loopback ports, and a plain HTTP client for them."""

import pytest

from nbserve.config import ServerConfig
from nbserve.engine import Engine
from nbserve.http import Server
from helpers import Client


def start(engine, **settings):
    config = ServerConfig()
    config.values.update({f"{api}_address": "http://127.0.0.1:0"
                          for api in ("inference", "management", "metrics")})
    config.values.update(settings)
    server = Server(engine, config).start()
    return server, {api: Client(url) for api, url in server.urls.items()}


@pytest.fixture
def server_factory():
    """Start servers (and engines) that are stopped after the test."""
    running = []

    def make(engine=None, **settings):
        engine = engine or Engine()
        server, clients = start(engine, **settings)
        running.append((server, engine))
        return engine, server, clients

    yield make
    for server, engine in running:
        server.stop(timeout=5)
        engine.close()
