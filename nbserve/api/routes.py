"""TorchServe's routes, described once: which API answers each path, to which methods, and what
the route is called.

The kernel's tornado servers (:mod:`nbserve.api.http.server`), the Ray Serve ingress, the
jupyter-server extension's proxy and the OpenAPI description all read this table, so a path
one of them answers is a path all of them know.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

API_NAMES = ("inference", "management", "metrics")
ANY = ("GET", "POST", "PUT", "DELETE")


@dataclass(frozen=True)
class Route:
    #: What the route does; servers map it to the code that answers it.
    name: str
    #: ``inference``, ``management`` or ``metrics``: the port that answers it.
    api: str
    #: The path, written once: ``{param}`` (``{param:regex}`` to narrow it), ``[...]`` an
    #: optional part. Its regular expression and its OpenAPI path are derived from it.
    template: str
    methods: tuple[str, ...]
    #: The methods that register, replace or unregister a model: TorchServe's model API, off
    #: unless ``enable_model_api``; through Jupyter, allowed only to who may run code there.
    model_api: tuple[str, ...] = ()

    @cached_property
    def pattern(self) -> str:
        """The path as a regular expression whose groups are its parameters, in order."""
        regex = ""
        for token in _TOKENS.split(self.template):
            if token == "[":
                regex += "(?:"
            elif token == "]":
                regex += ")?"
            elif param := _PARAM.fullmatch(token):
                regex += f"({param.group(2) or '[^/]+'})"
            else:
                regex += re.escape(token)
        return regex

    @cached_property
    def openapi(self) -> str:
        """The path as OpenAPI writes it: every parameter named, an optional slash left out."""
        path = _PARAM.sub(lambda m: "{%s}" % m.group(1), self.template.replace("[/]", ""))
        return path.replace("[", "").replace("]", "")

    @cached_property
    def _regex(self) -> re.Pattern:
        return re.compile(self.pattern)

    def matches(self, path: str) -> re.Match | None:
        return self._regex.fullmatch(path)


_PARAM = re.compile(r"\{(\w+)(?::([^}]+))?\}")
_TOKENS = re.compile(r"(\{[^}]+\}|\[|\])")

ROUTES = (
    Route("ping", "inference", "/ping", ANY),
    Route("api-description", "inference", "/", ("GET", "OPTIONS")),
    Route("openai-models", "inference", "/v1/models", ("GET",)),
    Route("openai-chat", "inference", "/v1/chat/completions", ("POST",)),
    Route("openai-completions", "inference", "/v1/completions", ("POST",)),
    Route("openai-predictions", "inference",
          "/predictions/{model_name}/{model_version}/v1/{endpoint:chat/completions|completions}",
          ("POST",)),
    Route("predictions", "inference", "/predictions/{model_name}[/{model_version}]",
          ("POST", "PUT")),
    Route("explanations", "inference", "/explanations/{model_name}[/{model_version}]",
          ("POST", "PUT")),
    Route("wfpredict", "inference", "/wfpredict/{workflow_name}", ("POST", "PUT")),
    Route("kserve-v1-predict", "inference", "/v1/models/{model_name:[^/:]+}:predict", ("POST",)),
    Route("kserve-v1-explain", "inference", "/v1/models/{model_name:[^/:]+}:explain", ("POST",)),
    Route("kserve-v1-model", "inference", "/v1/models/{model_name:[^/:]+}", ("GET",)),
    Route("kserve-v2-health", "inference", "/v2/health/{state:live|ready}", ("GET",)),
    Route("kserve-v2-infer", "inference",
          "/v2/models/{model_name}[/versions/{model_version}]/infer", ("POST",)),
    Route("kserve-v2-model", "inference", "/v2/models/{model_name}[/versions/{model_version}]",
          ("GET",)),
    Route("kserve-v2-model-ready", "inference",
          "/v2/models/{model_name}[/versions/{model_version}]/ready", ("GET",)),
    Route("api-description", "management", "/", ("GET", "OPTIONS")),
    Route("token", "management", "/token", ("GET",)),
    # TorchServe answers /models/ as /models.
    Route("models", "management", "/models[/]", ("GET", "POST"), model_api=("POST",)),
    Route("set-default", "management", "/models/{model_name}/{model_version}/set-default",
          ("PUT",)),
    Route("model", "management", "/models/{model_name}[/{model_version}]",
          ("GET", "PUT", "DELETE"), model_api=("DELETE",)),
    Route("workflows", "management", "/workflows[/]", ("GET", "POST"), model_api=("POST",)),
    Route("workflow", "management", "/workflows/{workflow_name}", ("GET", "DELETE"),
          model_api=("DELETE",)),
    Route("metrics", "metrics", "/metrics", ("GET",)),
)


def of_api(api: str) -> list[Route]:
    return [route for route in ROUTES if route.api == api]


def changes_models(method: str, path: str) -> bool:
    """Whether ``method path`` is a model-API call: registering, replacing or unregistering."""
    path = "/" + path.partition("?")[0].lstrip("/")
    return any(method in route.model_api and route.matches(path) for route in ROUTES)


def api_of(path: str) -> str:
    """Which API answers ``path`` (no leading slash needed, query ignored): the first route
    that matches it, else the inference API (which answers unknown paths with 404)."""
    path = "/" + path.partition("?")[0].lstrip("/")
    return next((route.api for route in ROUTES if route.api != "inference" and route.matches(path)),
                "inference")


#: The first segments of TorchServe's paths (``predictions``, ``models``, ``v1``, ...).
FIRST_SEGMENTS = tuple(dict.fromkeys(
    route.openapi.strip("/").split("/")[0] for route in ROUTES if route.openapi != "/"))


def served_line(name: str, version: str, where: str, url: str) -> str:
    """The line that says a model is served: what, where it runs (``(cpu, 1 worker)``,
    ``on Ray (2 replicas, 1 CPU each)``), and the URL to call."""
    return f"Serving {name} {version} {where}: {url}/predictions/{name}"
