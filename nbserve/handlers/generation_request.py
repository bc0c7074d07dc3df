"""A text generation request as OpenAI's API and TorchServe's LLM examples send it, checked
as OpenAI checks it: each bad parameter a 400 that names it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

#: OpenAI's endpoints, as nbserve.api.openai names them in the request it hands on.
ENDPOINTS = ("chat.completions", "completions")


class GenerationError(Exception):
    """A request this handler cannot run: answered alone, with OpenAI's fields."""

    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.param, self.status = param, status


@dataclass
class Choice:
    sequence_id: str
    tokens: list[int] = field(default_factory=list)
    text: str = ""  # its tokens decoded, as of ``decoded`` tokens
    decoded: int = 0
    sent: int = 0  # characters of the text already answered
    finish_reason: str | None = None
    done: bool = False
    first_token_at: float | None = None  # time.monotonic() of its first token
    last_token_at: float | None = None  # and of its latest
    #: Per token: ``(token id, log probability, [(id, log probability), ...] most likely)``.
    logprobs: list = field(default_factory=list)


@dataclass
class Generation:
    endpoint: str  # "chat.completions", "completions", or "text" (TorchServe's form)
    prompt_ids: list[int]
    max_tokens: int
    stop: list[str]
    choices: list[Choice]
    echo: str = ""
    #: vLLM's extension: generate ``max_tokens`` whatever the model says (benchmarks use it).
    ignore_eos: bool = False
    #: How many most likely tokens each token's log probability comes with (None: none asked).
    logprobs: int | None = None
    #: Run alone with ``generate`` (a seed, or log probabilities): its future, else None.
    solo: Any = None
    #: Else the continuous-batching manager that decodes its sequences.
    manager: Any = None
    started: float = field(default_factory=time.monotonic)


def request_body(row: dict) -> dict:
    body = row.get("data", row.get("body")) if isinstance(row, dict) else row
    if isinstance(body, (bytes, bytearray)):
        try:
            body = body.decode()
        except UnicodeDecodeError:
            raise GenerationError("The request is not UTF-8 text.") from None
    if isinstance(body, str):
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        body = parsed if isinstance(parsed, dict) else {"prompt": body}
    if not isinstance(body, dict):
        raise GenerationError("The request must be a JSON object.")
    return body


def prompt_text(prompt) -> str:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise GenerationError("'prompt' must be a string (one prompt a request).", "prompt")
    return prompt


def optional_int(body: dict, name: str, default: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise GenerationError(f"{name} must be an integer.", name)
    return value


def number(body: dict, name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise GenerationError(f"{name} must be a number from {low} to {high}.", name)
    return value


def stops(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > 4 \
            or not all(isinstance(s, str) and s for s in stops):
        raise GenerationError("stop must be a string or a list of up to 4 strings.", "stop")
    return stops


def safe_end(text: str, stops: list[str]) -> int:
    """How much of ``text`` can be sent while more tokens come: not a trailing piece of a
    character still being decoded, nor an ending that a stop string may begin with."""
    end = len(text.rstrip("\ufffd"))
    for stop in stops:
        for size in range(min(len(stop) - 1, end), 0, -1):
            if text[:end].endswith(stop[:size]):
                end = min(end, len(text[:end]) - size)
                break
    return end
