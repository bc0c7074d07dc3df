"""An engine and its HTTP server on free loopback ports, and a plain HTTP client for them."""

import pytest

from nbserve.engine import Engine
from helpers import start_server


@pytest.fixture
def server_factory():
    """Start servers (and engines) that are stopped after the test."""
    running = []

    def make(engine=None, **settings):
        engine = engine or Engine()
        server, clients = start_server(engine, **settings)
        running.append((server, engine))
        return engine, server, clients

    yield make
    for server, engine in running:
        server.stop(timeout=5)
        engine.close()
