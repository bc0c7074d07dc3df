"""TorchServe's and KServe's paths on Ray Serve's HTTP proxy, so clients do not change.

One deployment at route prefix ``/`` checks each request as nbserve's own servers do (Host,
Origin, and the inference or management key: :mod:`nbserve.api.access`), reads it as they do
(:mod:`nbserve.api.protocol`), sends it to the model's replicas (:mod:`.replica`), and answers
as TorchServe does, errors included. Inference and management share the proxy's one port.
Registering, scaling and unregistering stay with whoever deploys (``%serve --on ray``,
``nbserve serve --on ray``): on a cluster they are Ray Serve's to do.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from nbserve.api.access import Access, check_token
from nbserve.api.http.errors import error_body, error_parts
from nbserve.api.limits import RequestBody
from nbserve.api.protocol import (
    kserve_metadata,
    kserve_v1_answer,
    kserve_v1_inputs,
    kserve_v1_model,
    kserve_v2_answer,
    kserve_v2_inputs,
    prediction_answer,
    request_id,
    request_inputs,
)
from nbserve.api.routes import ROUTES
from nbserve.api.tokens import TokenAuthorization
from nbserve.config import SERVER_DEFAULTS, ServerConfig
from nbserve.errors import MethodNotAllowed, ModelNotFound, ModelVersionNotFound, NBServeError
from nbserve.ray_serve.applications import MODEL_APP_PREFIX, app_name, deployment_state
from nbserve.ray_serve.replica import call_replica, stream_replica
from nbserve.serving.answers import encode_answer
from nbserve.serving.queue import Prediction

_MAX_INSTANCES = SERVER_DEFAULTS["max_kserve_instances"]


#: TorchServe's workflow routes, which an ingress of Ray Serve replicas does not serve.
WORKFLOW_ROUTES = {"workflows", "workflow", "wfpredict"}
OPENAI_ROUTES = {"openai-models", "openai-chat", "openai-completions", "openai-predictions"}


@serve.deployment
class Ingress:
    """Routes TorchServe's paths to the models' Serve applications."""

    def __init__(self, config: ServerConfig, url: str, keys: dict[str, str] | None):
        """``url``: where Ray's proxy listens (its Host rules follow it); ``keys``: the
        deployer's, None with token authorization off."""
        self.max_request_size = config.max_request_size
        self.max_response_size = config.max_response_size
        self.response_timeout = config.default_response_timeout
        self.access = Access(config, url)
        self.tokens = TokenAuthorization(None, None, keys=keys) if keys is not None else None
        self._handles: dict[str, Any] = {}
        self._started = time.time()  # OpenAI's model card's "created"
        #: What answers each route of :data:`nbserve.api.routes.ROUTES` on Ray's proxy: inference,
        #: and reading the management API (its writes are refused, see refuse_management).
        self._answers = {
            "ping": self.ping, "predictions": self.prediction, "explanations": self.explanation,
            "kserve-v1-predict": self.kserve_v1, "kserve-v1-explain": self.kserve_v1_explain,
            "kserve-v1-model": self.kserve_model, "kserve-v2-health": self.kserve_health,
            "kserve-v2-infer": self.kserve_v2, "kserve-v2-model": self.kserve_model,
            "kserve-v2-model-ready": self.kserve_model,
            "models": self.models, "model": self.describe_model,
        }

    async def __call__(self, request: Request) -> Response:
        cors: dict[str, str] = {}
        known_as = request_id(request.headers)
        try:
            cors, preflight = self.access.admit(request.headers, request.method,
                                                request.url.scheme, request.headers.get("host", ""))
            response = Response(status_code=200) if preflight else await self._route(request)
        except Exception as error:  # every error is answered as TorchServe's JSON
            status, type_, message, headers = error_parts(error, 500)
            response = Response(error_body(status, type_, message, known_as), status, headers,
                                media_type="application/json")
        response.headers.update(cors)
        response.headers["x-request-id"] = known_as
        return response

    def keys(self) -> dict[str, str] | None:
        """The keys this ingress asks for, for another deployer to hand its users."""
        return self.tokens.keys if self.tokens is not None else None

    async def _route(self, request: Request) -> Response:
        path = request.url.path
        for route in ROUTES:
            match = route.matches(path)
            if match is None or request.method not in route.methods:
                continue
            kind = None if route.api == "metrics" else route.api
            check_token(self.tokens, kind, request.headers.get("authorization"))
            if route.name in OPENAI_ROUTES:
                raise MethodNotAllowed(
                    "OpenAI's API is not served on Ray: text generation runs continuous "
                    "batching in one worker. Serve the language model with nbserve serve "
                    "(without --on ray).")
            if route.name in WORKFLOW_ROUTES:
                raise MethodNotAllowed(
                    "Workflows are not served on Ray: their DAG runs in the server that "
                    "registered them. Serve the workflow with nbserve serve (without --on ray); "
                    "its models may still be called here one by one.")
            if route.api == "management" and request.method != "GET":
                return await self.refuse_management(request)
            if route.name in self._answers:
                return await self._answers[route.name](request, *match.groups())
        if any(route.matches(path) for route in ROUTES if route.name in self._answers):
            raise MethodNotAllowed(f"{request.method} is not allowed on {path}.")
        raise ModelNotFound(f"Requested resource is not found: {path}")

    # Inference.

    async def ping(self, request: Request) -> Response:
        return _json({"status": "Healthy"})

    async def prediction(self, request: Request, model: str, version: str | None,
                         explain: bool = False) -> Response:
        """One request; a streaming handler's parts go out as chunks as the replica sends
        them, the answer last."""
        body = await self._body(request)
        headers = {**request.headers, **({"explain": "True"} if explain else {})}
        first, rest = await self._guarded(model, lambda handle: stream_replica(
            handle, request_inputs(request.headers, body), headers, version,
            timeout=self.response_timeout))
        if isinstance(first, Prediction):
            status, headers, content = prediction_answer(first, self.max_response_size)
            return Response(content, status, headers)

        async def chunks():
            item = first
            while not isinstance(item, Prediction):
                yield encode_answer(item)[0]
                item = await rest.__anext__()
            yield encode_answer(item.value)[0]

        return StreamingResponse(chunks(), 200, media_type=encode_answer(first)[1])

    async def explanation(self, request: Request, model: str, version: str | None) -> Response:
        return await self.prediction(request, model, version, explain=True)

    async def kserve_v1(self, request: Request, model: str, explain: bool = False) -> Response:
        inputs = kserve_v1_inputs(await self._body(request), _MAX_INSTANCES)
        headers = {"explain": "True"} if explain else None
        answers = await asyncio.gather(*(self._predict(model, None, i, headers) for i in inputs))
        return _json(kserve_v1_answer(answers, "explanations" if explain else "predictions"))

    async def kserve_v1_explain(self, request: Request, model: str) -> Response:
        return await self.kserve_v1(request, model, explain=True)

    async def kserve_v2(self, request: Request, model: str, version: str | None) -> Response:
        body, inputs = kserve_v2_inputs(await self._body(request), _MAX_INSTANCES)
        answers = await asyncio.gather(*(self._predict(model, version, i) for i in inputs))
        served = await self._call(model, "describe")
        return _json(kserve_v2_answer(body, model, served["modelVersion"], answers))

    async def kserve_health(self, request: Request, state: str) -> Response:
        return _json({state: True})

    async def kserve_model(self, request: Request, model: str, version: str | None = None,
                           ) -> Response:
        served = await self._described(model, version)
        ready = any(w["status"] == "READY" for w in served["workers"])
        if request.url.path.startswith("/v1/"):
            return _json(kserve_v1_model(model, ready, self._started))
        if request.url.path.endswith("/ready"):
            return _json({"name": model, "ready": ready})
        return _json(kserve_metadata(model, [served["modelVersion"]]))

    # Management (reading only).

    async def models(self, request: Request) -> Response:
        names = [name for name in await _applications() if name.startswith(MODEL_APP_PREFIX)]
        described = await asyncio.gather(*(self._call(n[len(MODEL_APP_PREFIX):], "describe")
                                           for n in sorted(names)))
        return _json({"models": [{"modelName": d["modelName"], "modelUrl": d["modelUrl"]}
                                 for d in described]})

    async def describe_model(self, request: Request, model: str, version: str | None) -> Response:
        """TorchServe's describe JSON, from one replica, with the replicas Ray runs."""
        served = await self._described(model, version)
        served["replicas"] = deployment_state(await _applications(), model)
        return _json([served])

    async def _described(self, model: str, version: str | None) -> dict:
        """One replica's describe JSON; a version other than the one deployed is not found."""
        served = await self._call(model, "describe")
        if version not in (None, "all", served["modelVersion"]):
            raise ModelVersionNotFound(f"Model version: {version} does not exist for model: "
                                       f"{model} (it has {served['modelVersion']})")
        return served

    async def refuse_management(self, request: Request) -> Response:
        raise MethodNotAllowed(
            "On Ray Serve, models are deployed, scaled and removed by whoever serves them "
            "(%serve --on ray, or nbserve serve --on ray), not over this API.")

    # The path to a replica.

    async def _body(self, request: Request) -> bytes:
        """The body, refused past max_request_size as the kernel's servers refuse it."""
        body = RequestBody(request.headers, limit=self.max_request_size, keep=True,
                           lingering_size=0, lingering_time=0)
        body.check_declared()
        async for chunk in request.stream():
            if not body.add(chunk):
                break
        return body.value

    async def _predict(self, model: str, version: str | None, inputs: dict,
                       headers: dict | None = None):
        return await self._call(model, "predict", inputs, headers, version)

    async def _handle(self, model: str):
        """The model's deployment handle; ModelNotFound if it is not deployed."""
        handle = self._handles.get(model)
        if handle is None:
            if app_name(model) not in await _applications():
                raise ModelNotFound(f"Model not found: {model}")
            handle = self._handles[model] = serve.get_app_handle(app_name(model))
        return handle

    async def _call(self, model: str, method: str, *args):
        return await self._guarded(model, lambda handle: call_replica(
            handle, method, *args, timeout=self.response_timeout))

    async def _guarded(self, model: str, call):
        """``call(handle)`` on the model's replicas; ModelNotFound if it was undeployed since."""
        handle = await self._handle(model)
        try:
            return await call(handle)
        except NBServeError:
            raise
        except Exception:
            if app_name(model) in await _applications():
                raise
            self._handles.pop(model, None)  # undeployed since
            raise ModelNotFound(f"Model not found: {model}") from None


async def _applications() -> dict:
    """Serve's applications, asked of its controller off the event loop."""
    return (await asyncio.to_thread(serve.status)).applications


def _json(value: Any) -> Response:
    return Response(json.dumps(value, indent=2), 200, media_type="application/json")
