"""A handler's answer as it leaves the worker: plain data where it is, else encoded as its HTTP
answer will be, so a worker process never sends the server an object of the handler's classes."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

from nbserve.errors import NBServeError


@dataclass(frozen=True)
class Encoded:
    """An answer already encoded as :func:`encode_answer` would encode it: what a worker process
    sends for a value that is not plain data (a tensor, an object of the handler's own class),
    so the server never has to import the handler's code to read it."""

    body: bytes
    content_type: str


PLAIN_TYPES = (type(None), bool, int, float, str, bytes)


def plain(value: Any) -> Any:
    """``value`` if it is plain data (None, numbers, text, bytes, and lists, tuples and
    string-keyed dicts of them), else its :class:`Encoded` answer; NBServeError if it cannot be
    encoded at all."""
    if _is_plain(value):
        return value
    return Encoded(*encode_answer(value))


def _is_plain(value: Any) -> bool:
    if type(value) in PLAIN_TYPES:
        return True
    if type(value) in (list, tuple):
        return all(_is_plain(item) for item in value)
    if type(value) is dict:
        return all(type(k) is str and _is_plain(v) for k, v in value.items())
    return False


def encode_answer(value: Any) -> tuple[bytes, str]:
    """An answer as TorchServe sends it: bytes and text as they are, tensors saved, the rest
    as indented JSON; each with a content type that no browser renders as a page."""
    if isinstance(value, Encoded):
        return value.body, value.content_type
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), "application/octet-stream"
    if isinstance(value, str):
        return value.encode(), "text/plain; charset=utf-8"
    try:
        import torch

        if isinstance(value, torch.Tensor):
            buffer = io.BytesIO()
            torch.save(value, buffer)
            return buffer.getvalue(), "application/octet-stream"
    except ImportError:
        pass
    try:
        return json.dumps(value, indent=2).encode(), "application/json"
    except (TypeError, ValueError) as e:
        raise NBServeError(f"The handler's answer cannot be sent as JSON: {e}") from None
