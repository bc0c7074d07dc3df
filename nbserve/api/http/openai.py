"""OpenAI's API on the inference port: ``GET /v1/models``, ``POST /v1/chat/completions`` and
``/v1/completions``, and the same under TorchServe's form,
``/predictions/{model}/{version}/v1/...``, so TorchServe's vLLM clients work unchanged. The
inference key is the client's ``api_key``.

A request's path: its JSON goes to the model named in it (or in the path) as the text
generation handler's input, with the endpoint; each part the handler streams becomes one
server-sent event, flushed at once (``data: [DONE]`` last), or the parts are joined into one
answer. A client that goes away cancels its generation (see BodyHandler). Errors are
OpenAI's ``{"error": {...}}``.
"""

from __future__ import annotations

import json

from nbserve.api import openai
from nbserve.api.http.errors import error_parts
from nbserve.api.http.inference import BodyHandler
from nbserve.api.protocol import json_object
from nbserve.errors import BadRequest, InvalidKey, ModelNotFound
from nbserve.handlers.text_generation import serves_text_generation


class _OpenAIHandler(BodyHandler):
    _model = None  # the model asked for, once read

    def write_error(self, status_code: int, **kwargs) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        status, _, message, headers = error_parts(error, status_code)
        if isinstance(error, ModelNotFound):
            message = f"The model `{self._model}` does not exist. {message}"
        if isinstance(error, InvalidKey):  # TorchServe answers 400; OpenAI's clients expect 401
            status = 401
        self._write_error(status, message, getattr(error, "param", None), headers)

    def _write_error(self, status: int, message: str, param: str | None = None,
                     headers: dict | None = None) -> None:
        self.set_status(status)
        for name, value in (headers or {}).items():
            self.set_header(name, value)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(openai.error(status, message, param)))


class ModelsHandler(_OpenAIHandler):
    """``GET /v1/models``: the models that generate text."""

    def get(self):
        cards = [openai.model_card(model.name, model.default.loaded_at.timestamp())
                 for model in self.engine.models()
                 if serves_text_generation(model.default.handler)]
        self.write_json({"object": "list", "data": cards})


class CompletionsHandler(_OpenAIHandler):
    """``POST /predictions/{model}/{version}/v1/chat/completions`` (or ``/completions``):
    OpenAI's API under TorchServe's path for its vLLM models."""

    #: ``chat.completions`` or ``completions``; here, the path says which.
    endpoint: str | None = None

    async def post(self, model: str | None = None, version: str | None = None,
                   endpoint: str | None = None):
        endpoint = self.endpoint or endpoint.replace("/", ".")
        body = json_object(self.body)
        model = self._model = model or body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("You must provide a model parameter.")
        self.engine.get(model, version or None)  # 404 before anything runs
        completion = openai.Completion(endpoint, model, body)
        stream = body.get("stream") is True

        def on_part(part):
            self.server.call_in_loop(self._on_part, completion, part, stream)

        self._streaming = False
        prediction = await self.predict(model, version, {"body": {**body, "endpoint": endpoint}},
                                        on_part=on_part)
        if prediction.status != 200:
            answer = prediction.value if isinstance(prediction.value, dict) else {}
            message = answer.get("message", str(prediction.value))
            if self._streaming:  # the stream has begun: its error is its last event
                self.write(openai.event(openai.error(prediction.status, message)))
                self.finish(openai.event("[DONE]"))
            else:
                self._write_error(prediction.status, message, answer.get("param"))
            return
        self._on_part(completion, prediction.value, stream)
        if not stream:
            self.write_json(completion.whole())
            return
        self._start_stream()
        for chunk in completion.last_chunks():
            self.write(openai.event(chunk))
        self.finish(openai.event("[DONE]"))

    def _on_part(self, completion: openai.Completion, part, stream: bool) -> None:
        if self._finished or not isinstance(part, dict):
            return
        chunks = completion.add(part)
        if stream and chunks:
            self._start_stream()
            for chunk in chunks:
                self.write(openai.event(chunk))
            self.flush()

    def _start_stream(self) -> None:
        if not self._streaming:
            self._streaming = True
            self.set_header("Content-Type", "text/event-stream")
            self.set_header("Cache-Control", "no-cache")


class ChatCompletionsHandler(CompletionsHandler):
    """``POST /v1/chat/completions``: a chat's next message."""

    endpoint = "chat.completions"


class TextCompletionsHandler(CompletionsHandler):
    """``POST /v1/completions``: a prompt's continuation."""

    endpoint = "completions"
