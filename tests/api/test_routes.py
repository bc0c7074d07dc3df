"""The route table: every server that answers TorchServe's paths reads it, and answers exactly
the methods it lists."""

import pytest

from nbserve.api.http.server import HANDLERS
from nbserve.api.routes import ROUTES, api_of

EVERY_METHOD = ("GET", "POST", "PUT", "DELETE")


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.api}:{r.name}")
def test_each_handler_answers_the_methods_its_route_lists(route):
    from tornado.web import RequestHandler

    handler = HANDLERS[route.name]
    answered = {m for m in EVERY_METHOD + ("OPTIONS",)
                if getattr(handler, m.lower()).__wrapped__ is not getattr(RequestHandler, m.lower())}
    assert answered == set(route.methods)


def test_a_method_a_route_does_not_list_is_torchserves_405(server_factory, classifier_mar):
    """POST /models/{m} inherited POST /models' handler once, and answered 500."""
    engine, _, clients = server_factory(enable_model_api=True)
    engine.register(classifier_mar)
    for method, path in (("POST", "/models/resnet18"), ("POST", "/models/resnet18/1.0"),
                         ("DELETE", "/models"), ("PUT", "/metrics")):
        client = clients[api_of(path)]
        status, answer = client.json(method, path, b"")
        assert (status, answer["type"]) == (405, "MethodNotAllowedException"), (method, path)
    assert [m.name for m in engine.models()] == ["resnet18"]
    status, description = clients["management"].json("OPTIONS", "/")
    assert set(description["paths"]["/models/{model_name}/{model_version}"]) == {"get", "put", "delete"}
    status, description = clients["inference"].json("OPTIONS", "/")
    assert set(description["paths"]) == {r.openapi for r in ROUTES if r.api == "inference"}


def test_the_extension_forwards_the_paths_the_kernel_answers():
    import re

    from nbserve.extension import _PATHS

    for route in ROUTES:
        example = re.sub(r"\{[^}]+\}", "x", route.openapi).lstrip("/")
        if example:
            assert re.fullmatch(_PATHS, example), route
    assert not re.fullmatch(_PATHS, "api-description")
