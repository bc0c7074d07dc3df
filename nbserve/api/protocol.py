"""TorchServe's and KServe's request and answer shapes, apart from any HTTP server.

The tornado APIs (:mod:`nbserve.api.http`) and the Ray Serve ingress (:mod:`nbserve.ray_serve`)
both turn a request into a handler's inputs, and an answer into a body, with these functions,
so a client gets the same answer from either.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from typing import Any, Mapping

from tornado import httputil

from nbserve.api.openai import model_card
from nbserve.errors import BadRequest, NBServeError
from nbserve.serving.answers import encode_answer
from nbserve.serving.queue import Prediction

#: A client's X-Request-ID that is used as it is: one that cannot forge a log line or a header.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


def request_id(headers: Mapping[str, str]) -> str:
    """The id a request is known by in its answer's ``X-Request-ID``, the access log, its trace
    and any error JSON: the client's own, if it sent a sane one, else a new one."""
    sent = headers.get("X-Request-ID") or ""
    return sent if _REQUEST_ID.fullmatch(sent) else str(uuid.uuid4())


def request_inputs(headers: Mapping[str, str], body: bytes) -> dict:
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
    try:
        httputil.parse_body_arguments(content_type, body, arguments, files)
    except httputil.HTTPInputError as e:
        raise BadRequest(f"The {media_type} body cannot be read: {e}.") from None
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


def prediction_answer(prediction: Prediction, max_response_size: int) -> tuple[int, dict, bytes]:
    """``(status, headers, body)`` of a prediction's HTTP answer, as TorchServe sends it."""
    body, content_type = encode_answer(prediction.value)
    if len(body) > max_response_size:
        raise NBServeError(f"The answer of {len(body)} bytes is larger than "
                           f"max_response_size ({max_response_size}).")
    headers = dict(prediction.headers)
    if "content-type" not in {k.lower() for k in headers}:
        headers["Content-Type"] = content_type
    return prediction.status, headers, body


def kserve_v1_inputs(body: bytes, max_instances: int) -> list[dict]:
    """``{"instances": [...]}``: each instance is one request to the model, at most
    ``max_instances`` of them."""
    instances = json_object(body).get("instances")
    if not isinstance(instances, list):
        raise BadRequest('A KServe v1 request needs "instances": a list.')
    _check_count(len(instances), max_instances, "instances")
    return [instance if isinstance(instance, dict) else {"body": instance}
            for instance in instances]


def _check_count(count: int, limit: int, what: str) -> None:
    # Each item becomes a request of its own: a body of a million tiny items would queue a
    # million requests.
    if count > limit:
        raise BadRequest(f"The request has {count} {what}; at most {limit} are taken at once "
                         "(max_kserve_instances): send them in several requests.")


def kserve_v1_answer(predictions: list[Prediction], key: str = "predictions") -> dict:
    """``{"predictions": [...]}`` (or ``{"explanations": [...]}``), one per instance."""
    return {key: [p.value for p in predictions]}


def kserve_v2_inputs(body: bytes, max_instances: int) -> tuple[dict, list[dict]]:
    """An Open Inference Protocol request, and one model input per input tensor (``BYTES``
    data is base64, as the protocol's JSON form sends it), at most ``max_instances``."""
    request = json_object(body)
    tensors = request.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise BadRequest('An inference request needs "inputs": a list of tensors.')
    _check_count(len(tensors), max_instances, "input tensors")
    inputs = []
    for tensor in tensors:
        value = _v2_data(tensor)
        inputs.append({"data": value, "body": value})
    return request, inputs


def kserve_v2_answer(request: dict, model: str, version: str,
                     predictions: list[Prediction]) -> dict:
    """Each answer as an output named after its input tensor."""
    outputs = []
    for tensor, prediction in zip(request["inputs"], predictions):
        data = prediction.value if isinstance(prediction.value, list) else [prediction.value]
        outputs.append({"name": tensor.get("name", "output"), "shape": [len(data)],
                        "datatype": "BYTES", "data": data})
    return {"id": request.get("id", ""), "model_name": model, "model_version": version,
            "outputs": outputs}


def kserve_v1_model(model: str, ready: bool, created: float) -> dict:
    """``GET /v1/models/{model}``: KServe v1's readiness, and the OpenAI model card that
    shares its path."""
    return {"name": model, "ready": ready, **model_card(model, created)}


def kserve_metadata(model: str, versions: list[str]) -> dict:
    """KServe v2 model metadata."""
    return {"name": model, "versions": versions, "platform": "pytorch", "inputs": [],
            "outputs": []}


def _v2_data(tensor: dict) -> Any:
    data = tensor.get("data")
    if tensor.get("datatype") == "BYTES" and isinstance(data, list) and len(data) == 1 \
            and isinstance(data[0], str):
        try:
            return base64.b64decode(data[0], validate=True)
        except ValueError:
            return data[0]
    return data


def json_object(body: bytes) -> dict:
    try:
        value = json.loads(body or b"{}")
    except ValueError as e:
        raise BadRequest(f"The request body is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise BadRequest("The request body must be a JSON object.")
    return value
