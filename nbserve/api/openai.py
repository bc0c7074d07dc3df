"""OpenAI's API, as JSON: chat completions and completions built from the parts a text
generation handler answers (:mod:`nbserve.handlers.text_generation`), streamed as
server-sent events or joined into one answer, and OpenAI's errors. The routes are
:mod:`nbserve.api.http.openai`'s."""

from __future__ import annotations

import json
import time
import uuid

#: OpenAI's error ``type`` and ``code`` by HTTP status.
ERROR_TYPES = {400: ("invalid_request_error", None), 401: ("invalid_request_error",
                                                           "invalid_api_key"),
               403: ("invalid_request_error", None), 404: ("invalid_request_error",
                                                           "model_not_found"),
               413: ("invalid_request_error", None), 429: ("rate_limit_error", None),
               503: ("server_error", None)}


def error(status: int, message: str, param: str | None = None) -> dict:
    type_, code = ERROR_TYPES.get(status, ("server_error", None))
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def model_card(name: str, created: float) -> dict:
    """A model in ``GET /v1/models`` (``GET /v1/models/{model}`` adds KServe v1's fields:
    nbserve.api.protocol.kserve_v1_model)."""
    return {"id": name, "object": "model", "created": int(created), "owned_by": "nbserve"}


class Completion:
    """One OpenAI request's answer as its parts arrive: chunks to stream, or the whole."""

    def __init__(self, endpoint: str, model: str, body: dict):
        self.chat = endpoint == "chat.completions"
        self.model = model
        self.id = f"{'chatcmpl' if self.chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        options = body.get("stream_options") or {}
        self.include_usage = isinstance(options, dict) and options.get("include_usage") is True
        self.texts: dict[int, list[str]] = {}
        self.finish_reasons: dict[int, str | None] = {}
        self.logprobs: dict[int, list[dict]] = {}
        self.usage: dict | None = None

    def add(self, part: dict) -> list[dict]:
        """Take one part; the stream's chunks for it (an empty delta sends nothing)."""
        chunks = []
        for choice in part.get("choices", []):
            index, text = choice["index"], choice["text"]
            first = index not in self.texts
            self.texts.setdefault(index, []).append(text)
            if choice["finish_reason"]:
                self.finish_reasons[index] = choice["finish_reason"]
            if not (text or first or choice["finish_reason"]):
                continue
            logprobs = choice.get("logprobs")
            if logprobs is not None:
                self.logprobs.setdefault(index, []).extend(logprobs)
            if self.chat:
                delta = {"role": "assistant", "content": text} if first else {"content": text}
                if not text and not first:
                    delta = {}
                entry = {"index": index, "delta": delta}
            else:
                entry = {"index": index, "text": text}
            entry.update(logprobs=self._logprobs(logprobs), finish_reason=choice["finish_reason"])
            chunks.append(self._object([entry], chunk=True))
        if part.get("usage"):
            self.usage = part["usage"]
        return chunks

    def last_chunks(self) -> list[dict]:
        """After the last part: the usage chunk, if the client asked for one."""
        if not self.include_usage:
            return []
        return [dict(self._object([], chunk=True), usage=self.usage)]

    def whole(self) -> dict:
        choices = []
        for index in sorted(self.texts):
            text = "".join(self.texts[index])
            choice = ({"index": index, "message": {"role": "assistant", "content": text}}
                      if self.chat else {"index": index, "text": text})
            choice.update(logprobs=self._logprobs(self.logprobs.get(index)),
                          finish_reason=self.finish_reasons.get(index))
            choices.append(choice)
        return dict(self._object(choices), usage=self.usage)

    def _logprobs(self, tokens: list[dict] | None) -> dict | None:
        """The handler's per-token log probabilities in the endpoint's shape: chat's
        ``content`` list, or completions' parallel lists."""
        if tokens is None:
            return None
        if self.chat:
            return {"content": tokens}
        offsets, offset = [], 0
        for token in tokens:
            offsets.append(offset)
            offset += len(token["token"])
        return {"tokens": [t["token"] for t in tokens],
                "token_logprobs": [t["logprob"] for t in tokens],
                "top_logprobs": [{b["token"]: b["logprob"] for b in t["top_logprobs"]}
                                 for t in tokens],
                "text_offset": offsets}

    def _object(self, choices: list[dict], chunk: bool = False) -> dict:
        kind = ("chat.completion.chunk" if chunk else "chat.completion") if self.chat \
            else "text_completion"
        answer = {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                  "choices": choices}
        if chunk and self.include_usage:
            answer["usage"] = None
        return answer


def event(value: dict | str) -> bytes:
    """One server-sent event: a ``data:`` line and a blank one."""
    data = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return f"data: {data}\n\n".encode()
