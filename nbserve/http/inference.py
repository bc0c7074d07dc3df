"""The inference API: ``/ping``, ``/predictions/{model}[/{version}]``, the API description, and
the KServe v1 and v2 (Open Inference Protocol) routes.

A prediction's path: the body streams in (refused with 413 past ``max_request_size`` before it
is read whole), becomes the handler's input as TorchServe builds it, is submitted to the engine,
and the engine's answer is written back, as TorchServe writes it.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from typing import Any

from tornado import httputil
from tornado.web import stream_request_body

from nbserve.errors import BadRequest, NBServeError, RequestTooLarge
from nbserve.http.base import APIHandler


class PingHandler(APIHandler):
    """``/ping``, answered to any method, as TorchServe does."""

    def get(self):
        self.write_json({"status": "Healthy"})

    post = put = delete = get


@stream_request_body
class BodyHandler(APIHandler):
    """Reads the request body in chunks, keeping at most ``max_request_size`` bytes of it."""

    def prepare(self):
        super().prepare()
        self._chunks: list[bytes] = []
        self._size = 0
        self._limit = int(self.server.config.max_request_size)
        declared = self.request.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > self._limit:
            raise self._too_large(int(declared))

    def data_received(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size <= self._limit:
            self._chunks.append(chunk)
        else:
            self._chunks = []  # keep reading to the end, keep nothing

    @property
    def body(self) -> bytes:
        if self._size > self._limit:
            raise self._too_large(self._size)
        return b"".join(self._chunks)

    def _too_large(self, size: int) -> RequestTooLarge:
        return RequestTooLarge(f"Request body of {size} bytes is larger than max_request_size "
                               f"({self._limit} bytes); raise max_request_size to send it.")

    async def predict(self, model: str, version: str | None, inputs: dict) -> Any:
        """Submit one request; its answer, or the engine's error raised here."""
        future = self.engine.submit(model, inputs, version=version or None,
                                    headers=dict(self.request.headers.get_all()))
        return await asyncio.wrap_future(future)


class PredictionHandler(BodyHandler):
    """``POST``/``PUT /predictions/{model}[/{version}]``: one request to the model."""

    async def post(self, model: str, version: str | None = None):
        prediction = await self.predict(model, version, request_inputs(self.request.headers, self.body))
        body, content_type = encode_answer(prediction.value)
        if len(body) > int(self.server.config.max_response_size):
            raise NBServeError(f"The answer of {len(body)} bytes is larger than "
                               f"max_response_size ({self.server.config.max_response_size}).")
        self.set_status(prediction.status)
        headers = dict(prediction.headers)
        if content_type and "content-type" not in {k.lower() for k in headers}:
            headers["Content-Type"] = content_type
        for name, value in headers.items():
            self.set_header(name, value)
        self.finish(body)

    put = post


def request_inputs(headers: httputil.HTTPHeaders, body: bytes) -> dict:
    """The handler's input for one HTTP request, as TorchServe builds it.

    Multipart forms give one key per field (``data``, ``body``...); other bodies are
    ``{"body": ...}``: parsed for ``application/json``, text for ``text/*``, bytes otherwise.
    A body sent as ``x-www-form-urlencoded`` that is not a form (``curl --data-binary
    @cat.jpg``) is taken as raw bytes, where TorchServe fails with 500.
    """
    content_type = headers.get("Content-Type", "")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        fields = _form_fields(content_type, media_type, body)
        if fields:
            return fields
    return {"body": _decode(media_type, body)}


def _form_fields(content_type: str, media_type: str, body: bytes) -> dict:
    if media_type == "application/x-www-form-urlencoded":
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError:
            return {}
        if "=" not in text:
            return {}
    arguments: dict[str, list[bytes]] = {}
    files: dict[str, list[httputil.HTTPFile]] = {}
    httputil.parse_body_arguments(content_type, body, arguments, files)
    fields: dict[str, Any] = {}
    for name, values in arguments.items():
        fields[name] = _decode("text/plain", values[0])
    for name, uploads in files.items():
        upload = uploads[0]
        fields[name] = _decode(upload.content_type.split(";")[0].strip().lower(), upload.body)
    return fields


def _decode(media_type: str, value: bytes) -> Any:
    if media_type == "application/json":
        try:
            return json.loads(value)
        except ValueError:
            return value
    if media_type.startswith("text/"):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value


def encode_answer(value: Any) -> tuple[bytes, str | None]:
    """An answer as TorchServe sends it: bytes and text as they are, tensors saved, the rest
    as indented JSON."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), None
    if isinstance(value, str):
        return value.encode(), None
    try:
        import torch

        if isinstance(value, torch.Tensor):
            buffer = io.BytesIO()
            torch.save(value, buffer)
            return buffer.getvalue(), None
    except ImportError:
        pass
    try:
        return json.dumps(value, indent=2).encode(), "application/json"
    except (TypeError, ValueError) as e:
        raise NBServeError(f"The handler's answer cannot be sent as JSON: {e}") from None


class KServeV1Handler(BodyHandler):
    """``POST /v1/models/{model}:predict``: ``{"instances": [...]}`` in, ``{"predictions": [...]}``
    out, each instance one request to the model."""

    async def post(self, model: str):
        instances = _json_object(self.body).get("instances")
        if not isinstance(instances, list):
            raise BadRequest('A KServe v1 request needs "instances": a list.')
        answers = await asyncio.gather(*(
            self.predict(model, None, instance if isinstance(instance, dict) else {"body": instance})
            for instance in instances))
        self.write_json({"predictions": [a.value for a in answers]})


class KServeV2InferHandler(BodyHandler):
    """``POST /v2/models/{model}[/versions/{version}]/infer`` (Open Inference Protocol).

    Each input tensor is one request to the model (``BYTES`` data is base64, as the protocol's
    JSON form sends it); each answer is an output named after its input.
    """

    async def post(self, model: str, version: str | None = None):
        request = _json_object(self.body)
        inputs = request.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise BadRequest('An inference request needs "inputs": a list of tensors.')
        data = [_v2_data(tensor) for tensor in inputs]
        answers = await asyncio.gather(*(
            self.predict(model, version, {"data": value, "body": value}) for value in data))
        served = self.engine.get(model, version)
        outputs = []
        for tensor, answer in zip(inputs, answers):
            data = answer.value if isinstance(answer.value, list) else [answer.value]
            outputs.append({"name": tensor.get("name", "output"), "shape": [len(data)],
                            "datatype": "BYTES", "data": data})
        self.write_json({"id": request.get("id", ""), "model_name": model,
                         "model_version": served.version, "outputs": outputs})


def _v2_data(tensor: dict) -> Any:
    data = tensor.get("data")
    if tensor.get("datatype") == "BYTES" and isinstance(data, list) and len(data) == 1 \
            and isinstance(data[0], str):
        try:
            return base64.b64decode(data[0], validate=True)
        except ValueError:
            return data[0]
    return data


def _json_object(body: bytes) -> dict:
    try:
        value = json.loads(body or b"{}")
    except ValueError as e:
        raise BadRequest(f"The request body is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise BadRequest("The request body must be a JSON object.")
    return value


class KServeV2HealthHandler(APIHandler):
    def get(self, state: str):
        self.write_json({state: True})


class KServeModelHandler(APIHandler):
    """Model metadata and readiness, KServe v1 and v2."""

    def get(self, model: str, version: str | None = None, ready: str | None = None):
        served = self.engine.get(model, version)
        if ready or self.request.path.startswith("/v1/"):
            self.write_json({"name": model, "ready": any(w.status == "READY" for w in served.workers)})
            return
        self.write_json({"name": model, "versions": sorted(self.engine.model(model).versions),
                         "platform": "pytorch", "inputs": [], "outputs": []})


class ApiDescriptionHandler(APIHandler):
    """``GET``/``OPTIONS /`` on each API: its paths, as an OpenAPI 3 document."""

    def get(self):
        self.write_json(self.server.openapi(self.application))

    options = get
