"""The context a handler gets: TorchServe's ``ts.context.Context``, field for field.

Handlers written for TorchServe read ``context.system_properties["model_dir"]``,
``context.manifest``, request headers and ``context.metrics``; the same names work here. The
engine fills one context per worker and, before each batch, its request ids and headers.
"""

from __future__ import annotations

import os

from nbserve._version import __version__
from nbserve.handlers.metrics import HandlerMetrics

#: The TorchServe version whose handler API nbserve implements; handlers may read it.
TORCHSERVE_API_VERSION = "0.12.0"


class RequestProcessor:
    """One request's headers in, and its response status and headers out.

    Header names are matched without regard to case, as HTTP defines them (TorchServe matches
    them exactly, so ``X-Test`` sent by one client is missed by a handler asking for ``x-test``).
    """

    def __init__(self, request_header: dict):
        self._status_code = 200
        self._reason_phrase = None
        self._response_header: dict[str, str] = {}
        self._request_header = request_header
        self._lowercase = {k.lower(): v for k, v in request_header.items()}

    def get_request_property(self, key: str) -> str | None:
        value = self._request_header.get(key)
        return self._lowercase.get(key.lower()) if value is None else value

    def get_request_properties(self) -> dict:
        return self._request_header

    def report_status(self, code, reason_phrase=None) -> None:
        self._status_code = code
        self._reason_phrase = reason_phrase

    def get_response_status_code(self) -> int:
        return self._status_code

    def get_response_status_phrase(self) -> str | None:
        return self._reason_phrase

    def add_response_property(self, key: str, value: str) -> None:
        self._response_header[key] = value

    def get_response_headers(self) -> dict:
        return self._response_header

    def get_response_header(self, key: str) -> str | None:
        return self._response_header.get(key)


class Context:
    """What a handler knows of its model, its worker and the batch in hand."""

    def __init__(self, model_name, model_dir, manifest, batch_size, gpu, mms_version=None,
                 limit_max_image_pixels=True, metrics=None, model_yaml_config=None,
                 live_module=None):
        self.model_name = model_name
        self.manifest = manifest
        self._system_properties = {
            "model_dir": model_dir,
            "gpu_id": gpu,
            "batch_size": batch_size,
            "server_name": "nbserve",
            "server_version": mms_version or __version__,
            "limit_max_image_pixels": limit_max_image_pixels,
        }
        self.request_ids = None
        self._request_processor: list[RequestProcessor] | None = None
        self.metrics = metrics if metrics is not None else HandlerMetrics(model_name)
        self.model_yaml_config = model_yaml_config or {}
        #: The ``nn.Module`` of a model served live from a notebook, which has no weights file.
        self.live_module = live_module
        self.stopping_criteria = None
        #: ``send_part(request_id, value)``: one part of a request's answer, sent before the
        #: handler returns (see :mod:`nbserve.handlers.streaming`); set per batch.
        self.send_part = None
        self.header_key_sequence_id = os.getenv("TS_REQUEST_SEQUENCE_ID", "ts_request_sequence_id")

    @property
    def system_properties(self) -> dict:
        return self._system_properties

    @property
    def request_processor(self):
        return self._request_processor

    @request_processor.setter
    def request_processor(self, request_processor):
        self._request_processor = request_processor

    def get_request_id(self, idx: int = 0) -> str | None:
        return None if self.request_ids is None else self.request_ids.get(idx)

    def get_request_header(self, idx: int, key: str) -> str | None:
        return self._request_processor[idx].get_request_property(key)

    def get_all_request_header(self, idx: int) -> dict:
        return self._request_processor[idx].get_request_properties()

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.set_response_header(idx, "content-type", value)

    def get_response_content_type(self, idx: int) -> str | None:
        return self.get_response_headers(idx).get("content-type")

    def get_response_status(self, idx: int) -> tuple[int, str | None]:
        processor = self._request_processor[idx]
        return processor.get_response_status_code(), processor.get_response_status_phrase()

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        if self._request_processor is not None and self._request_processor[idx] is not None:
            self._request_processor[idx].report_status(code, reason_phrase=phrase)

    def set_all_response_status(self, code: int = 200, phrase: str = "") -> None:
        for processor in self._request_processor:
            processor.report_status(code, reason_phrase=phrase)

    def get_response_headers(self, idx: int) -> dict:
        return self._request_processor[idx].get_response_headers()

    def set_response_header(self, idx, key, value) -> None:
        self._request_processor[idx].add_response_property(key, value)

    def get_sequence_id(self, idx: int) -> str | None:
        return self._request_processor[idx].get_request_property(self.header_key_sequence_id)
