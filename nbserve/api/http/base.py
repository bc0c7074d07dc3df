"""What every API handler shares: TorchServe's headers, JSON answers and error bodies."""

from __future__ import annotations

import functools
import hmac
import json
from typing import TYPE_CHECKING, Any

from tornado.ioloop import IOLoop
from tornado.web import HTTPError, RequestHandler, stream_request_body

from nbserve.api import tracing
from nbserve.api.access import check_token
from nbserve.api.announce import SECRET_HEADER
from nbserve.api.http.errors import write_error
from nbserve.api.limits import Caller, RequestBody
from nbserve.api.protocol import request_id
from nbserve.errors import Forbidden, NBServeError
from nbserve.logs import server_metric

if TYPE_CHECKING:
    from nbserve.api.http.server import Server


@stream_request_body
class APIHandler(RequestHandler):
    """Base of nbserve's handlers; every answer and every error is JSON as TorchServe's is.

    Every route streams its body (:class:`~nbserve.api.limits.RequestBody`): routes that take
    one (``takes_body``) keep it up to ``max_request_size``, the others keep none of it, and a
    request refused before its body arrived is answered once the body is read, so the client
    sees the answer. Each HTTP method runs after the body is in, and only if nothing refused
    the request (:func:`_after_checks`).
    """

    #: Whether this route reads a request body (predictions, KServe); others keep none.
    takes_body = False
    #: The request's trace span (nbserve.api.tracing), from prepare on; None without OpenTelemetry.
    span = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in (m.lower() for m in cls.SUPPORTED_METHODS):
            method = getattr(cls, name)
            if not getattr(method, "after_checks", False):
                setattr(cls, name, _after_checks(method))

    def initialize(self, server: Server, api: str, route: str | None = None) -> None:
        self.server = server
        self.engine = server.engine
        #: Which of the three APIs this handler answers for: its key, its Host and CORS rules.
        self.api = api
        #: The path template it answers (``/predictions/{model_name}/{model_version}``); None
        #: for a path no route has.
        self.route = route

    @functools.cached_property
    def request_id(self) -> str:
        return request_id(self.request.headers)

    #: The key this handler asks for; the API's own by default (the metrics API asks none).
    @property
    def token_kind(self) -> str | None:
        return None if self.api == "metrics" else self.api

    def prepare(self):
        """Who may call, and how much it may send, checked before anything runs."""
        self.server.request_started()
        self.span = tracing.start_server_span(self.request.method, self.route or "",
                                              self.request.path, self.request.headers,
                                              self.request_id)
        config = self.server.config
        #: This connection's client, as its server keeps it (see LimitedHTTPServer).
        self.caller: Caller = getattr(self.request.connection.stream, "caller", None) or Caller()
        self._lingering = None
        self.request_body = RequestBody(
            self.request.headers, limit=config.max_request_size, keep=self.takes_body,
            lingering_size=config.lingering_size, lingering_time=config.lingering_time)
        try:
            self._check_caller()
            self.request_body.check_declared()
        except NBServeError as refusal:
            self.request_body.refuse(refusal)
            self._answer_refusal_in_time()

    def _check_caller(self) -> None:
        """See :mod:`nbserve.api.access`; a CORS preflight is answered here."""
        secret = self.request.headers.get(SECRET_HEADER)
        #: Forwarded by the jupyter-server extension, for a user Jupyter authenticated and
        #: authorized; Jupyter has checked its Host, Origin and credentials.
        self.via_jupyter = secret is not None
        if self.via_jupyter:
            expected = (self.server.secret or "").encode()
            if not (expected and hmac.compare_digest(secret.encode(), expected)):
                raise Forbidden(f"Wrong {SECRET_HEADER}.")
            self.caller.begin()
            return
        request = self.request
        cors, preflight = self.server.access[self.api].admit(
            request.headers, request.method, request.protocol, request.host)
        for name, value in cors.items():
            self.set_header(name, value)
        if preflight:
            self.set_status(200)
            self.finish()
            return
        check_token(self.server.tokens, self.token_kind, self.request.headers.get("Authorization"))
        self.caller.begin()

    def data_received(self, chunk: bytes) -> None:
        if not self.request_body.add(chunk):
            self._answer_refusal()
        else:
            self._answer_refusal_in_time()

    def _answer_refusal_in_time(self) -> None:
        """A refused request whose body is still coming is answered within lingering_time,
        whether or not the client goes on sending."""
        if self.request_body.refusal is not None and self._lingering is None:
            self._lingering = IOLoop.current().call_later(self.request_body.lingering_time,
                                                          self._answer_refusal)

    def _answer_refusal(self) -> None:
        """Answer the refusal now; the connection closes after it (its body is not all in)."""
        if not self._finished:
            refusal = self.request_body.refusal
            self.send_error(refusal.status, exc_info=(type(refusal), refusal, None))

    @property
    def body(self) -> bytes:
        """The request body, for routes that take one."""
        return self.request_body.value

    def finish(self, chunk=None):
        # TorchServe's Requests2XX/4XX/5XX, logged before the answer's last bytes leave, so a
        # client that reads ts_metrics.log once answered finds its line.
        if not self._finished:
            server_metric(f"Requests{self.get_status() // 100}XX", "count", 1,
                          {"Level": "Host"})
        return super().finish(chunk)

    def on_finish(self) -> None:
        if self._lingering is not None:
            IOLoop.current().remove_timeout(self._lingering)
        self.caller.end()
        tracing.end_server_span(self.span, self.get_status())
        self.server.log_access(self)
        self.server.request_finished()

    def set_default_headers(self) -> None:
        self.set_header("x-request-id", self.request_id)
        self.set_header("Pragma", "no-cache")
        self.set_header("Cache-Control", "no-cache; no-store, must-revalidate, private")
        self.set_header("Expires", "Thu, 01 Jan 1970 00:00:00 UTC")
        self.set_header("X-Content-Type-Options", "nosniff")

    def write_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value, indent=2))

    def write_error(self, status_code: int, **kwargs) -> None:
        write_error(self, status_code, **kwargs)

    def log_exception(self, typ, value, tb) -> None:
        if not isinstance(value, NBServeError):  # a user's error is an answer, not a server fault
            super().log_exception(typ, value, tb)


def _after_checks(method):
    """``method``, run only if the request was not answered or refused while it came in."""
    @functools.wraps(method)
    def checked(self, *args, **kwargs):
        if self._finished:
            return None
        self.request_body.check()
        return method(self, *args, **kwargs)

    checked.after_checks = True
    return checked


class NotFoundHandler(APIHandler):
    """Any path the API does not have: TorchServe's 404 JSON."""

    def get(self, *args, **kwargs):
        raise HTTPError(404)

    head = post = put = delete = patch = options = get
