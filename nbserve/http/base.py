"""What every API handler shares: TorchServe's headers, JSON answers and error bodies."""

from __future__ import annotations

import hmac
import json
import uuid
from typing import TYPE_CHECKING, Any

from tornado.web import HTTPError, RequestHandler

from nbserve.announce import SECRET_HEADER
from nbserve.errors import Forbidden, MethodNotAllowed, NBServeError
from nbserve.http.access import check_token
from nbserve.http.errors import describe, error_body

if TYPE_CHECKING:
    from nbserve.http.server import Server


class APIHandler(RequestHandler):
    """Base of nbserve's handlers; every answer and every error is JSON as TorchServe's is."""

    def initialize(self, server: Server, api: str) -> None:
        self.server = server
        self.engine = server.engine
        #: Which of the three APIs this handler answers for: its key, its Host and CORS rules.
        self.api = api

    #: The key this handler asks for; the API's own by default (the metrics API asks none).
    @property
    def token_kind(self) -> str | None:
        return None if self.api == "metrics" else self.api

    def prepare(self):
        """Who may call, checked before anything runs: see :mod:`nbserve.http.access`."""
        self.server.request_started()
        secret = self.request.headers.get(SECRET_HEADER)
        #: Forwarded by the jupyter-server extension, for a user Jupyter authenticated and
        #: authorized; Jupyter has checked its Host, Origin and credentials.
        self.via_jupyter = secret is not None
        if self.via_jupyter:
            expected = (self.server.secret or "").encode()
            if not (expected and hmac.compare_digest(secret.encode(), expected)):
                raise Forbidden(f"Wrong {SECRET_HEADER}.")
            return
        access = self.server.access[self.api]
        access.check_host(self.request.host)
        origin = access.cross_origin(self.request)
        preflight = self.request.method == "OPTIONS" and origin is not None and \
            "Access-Control-Request-Method" in self.request.headers
        if origin is not None:
            for name, value in access.cors_headers(origin, preflight).items():
                self.set_header(name, value)
        if preflight:
            self.set_status(200)
            self.finish()
            return
        check_token(self.server.tokens, self.token_kind, self.request.headers.get("Authorization"))

    def require_model_api(self, what: str) -> None:
        """Registering and unregistering: with enable_model_api, or for a Jupyter user."""
        if not (self.via_jupyter or self.server.config.enable_model_api):
            raise refuse_model_api(what)

    def on_finish(self) -> None:
        self.server.request_finished()

    def set_default_headers(self) -> None:
        self.set_header("x-request-id", str(uuid.uuid4()))
        self.set_header("Pragma", "no-cache")
        self.set_header("Cache-Control", "no-cache; no-store, must-revalidate, private")
        self.set_header("Expires", "Thu, 01 Jan 1970 00:00:00 UTC")

    def write_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value, indent=2))

    def write_error(self, status_code: int, **kwargs) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        status, type_, message, headers = describe(error, status_code)
        self.set_status(status)
        for name, value in headers.items():
            self.set_header(name, value)
        self.set_header("Content-Type", "application/json")
        self.finish(error_body(status, type_, message))

    def log_exception(self, typ, value, tb) -> None:
        if not isinstance(value, NBServeError):  # a user's error is an answer, not a server fault
            super().log_exception(typ, value, tb)


def refuse_model_api(what: str) -> MethodNotAllowed:
    return MethodNotAllowed(f"{what} over HTTP is off: set enable_model_api=true in "
                            "config.properties to allow it.")


class NotFoundHandler(APIHandler):
    """Any path the API does not have: TorchServe's 404 JSON."""

    def prepare(self):
        super().prepare()
        if not self._finished:
            raise HTTPError(404)
