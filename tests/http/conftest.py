"""An engine and its HTTP server on free loopback ports, and a plain HTTP client for them."""

import http.client
import json
from urllib.parse import urlsplit

import pytest

from nbserve.config import ServerConfig
from nbserve.engine import Engine
from nbserve.http import Server


class Client:
    """Real HTTP on loopback: ``call("PUT", "/predictions/m", body)`` -> (status, headers, body)."""

    def __init__(self, base: str):
        self.host, self.port = urlsplit(base).hostname, urlsplit(base).port

    def call(self, method, path, body=None, headers=None, timeout=60):
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            headers = headers or {}
            connection.request(method, path, body=body, headers=headers,
                               encode_chunked=headers.get("Transfer-Encoding") == "chunked")
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def json(self, method, path, body=None, headers=None):
        status, _, raw = self.call(method, path, body, headers)
        return status, json.loads(raw)


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
