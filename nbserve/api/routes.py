"""TorchServe's routes, described once: which API answers each path, to which methods, and what
the route is called.

The kernel's tornado servers (:mod:`nbserve.api.http.server`), the Ray Serve ingress, the
jupyter-server extension's proxy and the OpenAPI description all read this table, so a path
one of them answers is a path all of them know.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

API_NAMES = ("inference", "management", "metrics")
ANY = ("GET", "POST", "PUT", "DELETE")


@dataclass(frozen=True)
class Route:
    #: What the route does; servers map it to the code that answers it.
    name: str
    #: ``inference``, ``management`` or ``metrics``: the port that answers it.
    api: str
    #: The path, a regular expression whose groups are its parameters.
    pattern: str
    methods: tuple[str, ...]
    #: The path as OpenAPI writes it.
    openapi: str
    #: The methods that register, replace or unregister a model: TorchServe's model API, off
    #: unless ``enable_model_api``; through Jupyter, allowed only to who may run code there.
    model_api: tuple[str, ...] = ()

    def matches(self, path: str) -> re.Match | None:
        return re.fullmatch(self.pattern, path)


ROUTES = (
    Route("ping", "inference", r"/ping", ANY, "/ping"),
    Route("api-description", "inference", r"/", ("GET", "OPTIONS"), "/"),
    Route("predictions", "inference", r"/predictions/([^/]+)(?:/([^/]+))?", ("POST", "PUT"),
          "/predictions/{model_name}/{model_version}"),
    Route("explanations", "inference", r"/explanations/([^/]+)(?:/([^/]+))?", ("POST", "PUT"),
          "/explanations/{model_name}/{model_version}"),
    Route("kserve-v1-predict", "inference", r"/v1/models/([^/:]+):predict", ("POST",),
          "/v1/models/{model_name}:predict"),
    Route("kserve-v1-explain", "inference", r"/v1/models/([^/:]+):explain", ("POST",),
          "/v1/models/{model_name}:explain"),
    Route("kserve-v1-model", "inference", r"/v1/models/([^/:]+)", ("GET",),
          "/v1/models/{model_name}"),
    Route("kserve-v2-health", "inference", r"/v2/health/(live|ready)", ("GET",),
          "/v2/health/{state}"),
    Route("kserve-v2-infer", "inference", r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer",
          ("POST",), "/v2/models/{model_name}/versions/{model_version}/infer"),
    Route("kserve-v2-model", "inference", r"/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready)?",
          ("GET",), "/v2/models/{model_name}/versions/{model_version}/ready"),
    Route("api-description", "management", r"/", ("GET", "OPTIONS"), "/"),
    Route("token", "management", r"/token", ("GET",), "/token"),
    # TorchServe answers /models/ as /models.
    Route("models", "management", r"/models/?", ("GET", "POST"), "/models", model_api=("POST",)),
    Route("set-default", "management", r"/models/([^/]+)/([^/]+)/set-default", ("PUT",),
          "/models/{model_name}/{model_version}/set-default"),
    Route("model", "management", r"/models/([^/]+)(?:/([^/]+))?", ("GET", "PUT", "DELETE"),
          "/models/{model_name}/{model_version}", model_api=("DELETE",)),
    Route("metrics", "metrics", r"/metrics", ("GET",), "/metrics"),
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
