"""Errors as TorchServe answers them: ``{"code": ..., "type": ..., "message": ...}``."""

from __future__ import annotations

import json

from tornado.web import HTTPError

from nbserve.errors import NBServeError

#: What TorchServe calls the errors tornado raises by status.
HTTP_ERROR_TYPES = {
    400: ("BadRequestException", "Bad request."),
    401: ("UnauthorizedException", "Authentication is required."),
    403: ("ForbiddenException", "Not allowed for this user."),
    404: ("ResourceNotFoundException", "Requested resource is not found, please refer to API document."),
    405: ("MethodNotAllowedException", "Requested method is not allowed, please refer to API document."),
    413: ("RequestEntityTooLargeException", "Request body is larger than max_request_size."),
    503: ("ServiceUnavailableException", "Service is unavailable."),
}


def error_body(code: int, type_: str, message: str, request_id: str | None = None) -> str:
    """TorchServe's error JSON, and the request's id (its ``X-Request-ID``) where it has one."""
    body = {"code": code, "type": type_, "message": message}
    if request_id is not None:
        body["request_id"] = request_id
    return json.dumps(body, indent=2)


def error_parts(error: BaseException | None, status: int) -> tuple[int, str, str, dict]:
    """``(status, type, message, extra headers)`` for an exception raised while answering."""
    if isinstance(error, NBServeError):
        return error.status, error.type, str(error), dict(error.headers)
    if isinstance(error, HTTPError):
        status = error.status_code
        type_, message = HTTP_ERROR_TYPES.get(status, ("InternalServerException", ""))
        return status, type_, error.log_message or message, {}
    if status in HTTP_ERROR_TYPES:
        return (status, *HTTP_ERROR_TYPES[status], {})
    return 500, "InternalServerException", f"{type(error).__name__}: {error}", {}


def write_error(handler, status_code: int, **kwargs) -> None:
    """Answer a tornado handler's error as TorchServe's JSON, with the headers it carries; the
    kernel's APIs and the jupyter-server extension both answer with it."""
    error = kwargs.get("exc_info", (None, None, None))[1]
    status, type_, message, headers = error_parts(error, status_code)
    handler.set_status(status)
    for name, value in headers.items():
        handler.set_header(name, value)
    handler.set_header("Content-Type", "application/json")
    handler.finish(error_body(status, type_, message, getattr(handler, "request_id", None)))
