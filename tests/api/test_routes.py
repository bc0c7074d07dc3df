"""The route table: every server that answers TorchServe's paths reads it, and answers exactly
the methods it lists."""

import json
import re

from nbserve.api.routes import ROUTES, api_of

EVERY_METHOD = ("GET", "POST", "PUT", "DELETE")


def test_each_route_answers_the_methods_it_lists_and_405_to_the_rest(server_factory):
    """Every method on every route, over HTTP: a method the route lists is answered (a 4xx of
    its own at most, for a model that is not there), any other is TorchServe's 405."""
    engine, server, clients = server_factory(enable_model_api=True)
    for route in ROUTES:
        path = re.sub(r"\{[^}]+\}", lambda m: {"{state}": "live", "{endpoint}": "completions"}
                      .get(m.group(), "absent"), route.openapi)
        key = server.tokens.keys.get("API" if route.name == "token" else route.api)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        for method in EVERY_METHOD + ("OPTIONS",):
            status, _, raw = clients[route.api].call(method, path, b"" if method != "GET" else None,
                                                     headers)
            answer = json.loads(raw) if status == 405 else {}
            refused = status == 405 and (answer.get("type") == "MethodNotAllowedException"
                                         or route.name.startswith("openai") and "error" in answer)
            assert refused == (method not in route.methods), (route.name, method, status, raw)
    assert engine.models() == []


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
    from nbserve.extension import _PATHS

    for route in ROUTES:
        example = re.sub(r"\{[^}]+\}", "x", route.openapi).lstrip("/")
        if example:
            assert re.fullmatch(_PATHS, example), route
    assert not re.fullmatch(_PATHS, "api-description")


def test_each_route_is_written_once_and_its_pattern_and_openapi_path_agree():
    for route in ROUTES:
        fixed = {"{state}": "live", "{endpoint}": "chat/completions"}
        example = re.sub(r"\{[^}]+\}", lambda m: fixed.get(m.group(), "m1"), route.openapi)
        match = route.matches(example)
        assert match, (route.name, route.pattern, example)
        assert len(match.groups()) == route.openapi.count("{"), route.name
        assert all(value in ("m1", *fixed.values()) for value in match.groups()), \
            (route.name, match.groups())
