"""The inference API: ``/ping``, ``/predictions/{model}[/{version}]``, the API description, and
the KServe v1 and v2 (Open Inference Protocol) routes.

A prediction's path: the body streams in (refused with 413 past ``max_request_size``, see
:mod:`nbserve.api.limits`), becomes the handler's input as TorchServe builds it (:mod:`nbserve.api.protocol`),
is submitted to the engine, and the engine's answer is written back, as TorchServe writes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import Future, InvalidStateError
from typing import Any

from nbserve.api import tracing
from nbserve.api.http.base import APIHandler
from nbserve.api.protocol import (
    kserve_metadata,
    kserve_v1_answer,
    kserve_v1_inputs,
    kserve_v1_model,
    kserve_v2_answer,
    kserve_v2_inputs,
    prediction_answer,
    request_inputs,
)
from nbserve.errors import ClientClosedRequest, NBServeError
from nbserve.serving.answers import encode_answer
from nbserve.serving.queue import Stage


class PingHandler(APIHandler):
    """``/ping``, answered to any method, as TorchServe does."""

    def get(self):
        self.write_json({"status": "Healthy"})

    post = put = delete = get


class BodyHandler(APIHandler):
    """A route whose request body is the model's input."""

    takes_body = True
    #: Whether the route asks for explanations: TorchServe's ``explain: True`` header, which
    #: the handler's ``explain_handle`` answers.
    explains = False

    def initialize(self, **kwargs) -> None:
        super().initialize(**kwargs)
        #: The engine's futures this request waits on (KServe's instances are one each).
        self._waiting: list[Future] = []

    async def predict(self, model: str, version: str | None, inputs: dict,
                      on_part=None) -> Any:
        """Submit one request; its answer, or the engine's error raised here."""
        headers = dict(self.request.headers.get_all())
        if self.explains:
            headers["explain"] = "True"
        stages: list[Stage] = []
        received = time.time_ns()
        future = self.engine.submit(model, inputs, version=version or None, headers=headers,
                                    on_part=on_part, stages=stages)
        self._waiting.append(future)
        try:
            return await asyncio.wrap_future(future)
        finally:
            if self.span is not None:
                tracing.record_stages(self.span, received, stages, model,
                                      self._served_version(model, version))

    def _served_version(self, model: str, version: str | None) -> str | None:
        """The version that answered (the default, where none was named), if still served."""
        try:
            return self.engine.get(model, version or None).version
        except NBServeError:
            return version

    def on_connection_close(self) -> None:
        """The client is gone: what it still waits for is dropped before the forward pass."""
        super().on_connection_close()
        for future in self._waiting:
            with contextlib.suppress(InvalidStateError):
                future.set_exception(ClientClosedRequest(
                    f"The client closed the connection of request {self.request_id} before "
                    "its answer."))


class PredictionHandler(BodyHandler):
    """``POST``/``PUT /predictions/{model}[/{version}]``: one request to the model.

    Parts a streaming handler sends before it returns go out at once, each one chunk of a
    chunked answer (as TorchServe streams them); the returned answer is the last chunk.
    """

    async def post(self, model: str, version: str | None = None):
        self._streamed = 0
        prediction = await self.predict(
            model, version, request_inputs(self.request.headers, self.body),
            on_part=lambda value: self.server.call_in_loop(self._write_part, value))
        limit = self.server.config.max_response_size - self._streamed
        status, headers, body = prediction_answer(prediction, limit)
        if not self._streamed:
            self.set_status(status)
            for name, value in headers.items():
                self.set_header(name, value)
        self.finish(body)

    put = post

    def _write_part(self, value: Any) -> None:
        if self._finished:
            return
        body, content_type = encode_answer(value)
        if not self._streamed:
            self.set_header("Content-Type", content_type)
        self._streamed += len(body)
        self.write(body)
        self.flush()


class WorkflowPredictionHandler(BodyHandler):
    """``POST /wfpredict/{workflow}``: one request through a workflow's DAG
    (nbserve.serving.workflow)."""

    async def post(self, name: str):
        workflow = self.server.management.workflow(name)
        headers = dict(self.request.headers.get_all())
        body, content_type = await asyncio.wrap_future(
            workflow.predict(request_inputs(self.request.headers, self.body), headers))
        self.set_header("Content-Type", content_type)
        self.finish(body)

    put = post


class ExplanationHandler(PredictionHandler):
    """``POST``/``PUT /explanations/{model}[/{version}]``: the handler's explanation of one
    request (captum's Integrated Gradients for nbserve's vision and text handlers)."""

    explains = True


class KServeV1Handler(BodyHandler):
    """``POST /v1/models/{model}:predict``: ``{"instances": [...]}`` in, ``{"predictions": [...]}``
    out, each instance one request to the model; ``:explain`` answers ``{"explanations": ...}``."""

    async def post(self, model: str):
        instances = kserve_v1_inputs(self.body, self.server.config.max_kserve_instances)
        answers = await asyncio.gather(*(self.predict(model, None, i) for i in instances))
        self.write_json(kserve_v1_answer(answers, "explanations" if self.explains else "predictions"))


class KServeV1ExplainHandler(KServeV1Handler):
    """``POST /v1/models/{model}:explain``."""

    explains = True


class KServeV2InferHandler(BodyHandler):
    """``POST /v2/models/{model}[/versions/{version}]/infer`` (Open Inference Protocol)."""

    async def post(self, model: str, version: str | None = None):
        request, inputs = kserve_v2_inputs(self.body, self.server.config.max_kserve_instances)
        answers = await asyncio.gather(*(self.predict(model, version, i) for i in inputs))
        served = self.engine.get(model, version)
        self.write_json(kserve_v2_answer(request, model, served.version, answers))


class KServeV2HealthHandler(APIHandler):
    def get(self, state: str):
        self.write_json({state: True})


class KServeModelHandler(APIHandler):
    """Model metadata and readiness, KServe v1 and v2."""

    def get(self, model: str, version: str | None = None):
        served = self.engine.get(model, version)
        ready = any(w.status == "READY" for w in served.workers)
        if self.request.path.startswith("/v1/"):
            self.write_json(kserve_v1_model(model, ready, served.loaded_at.timestamp()))
            return
        if self.request.path.endswith("/ready"):
            self.write_json({"name": model, "ready": ready})
            return
        self.write_json(kserve_metadata(model, sorted(self.engine.model(model).versions)))


class ApiDescriptionHandler(APIHandler):
    """``GET``/``OPTIONS /`` on each API: its paths, as an OpenAPI 3 document."""

    def get(self):
        self.write_json(self.server.openapi(self.api))

    options = get
