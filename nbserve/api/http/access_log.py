"""The access log: one line per request, in the shape of TorchServe's ``ACCESS_LOG``::

    2026-12-07T11:20:31,123 - /127.0.0.1:53036 "POST /predictions/densenet161 HTTP/1.1" 200 37 f0b1...

the client's address, the request line, the status, the milliseconds it took, then (nbserve's
addition) the request's id, as its ``X-Request-ID`` header, error JSON and trace carry it.
``access_log`` in config.properties (or ``--access-log``) names a file, or ``-`` for stderr.
"""

from __future__ import annotations

import logging
import sys

from tornado.web import RequestHandler

from nbserve.logs import ACCESS_LAYOUT


def open_access_log(target: str | None) -> logging.Logger | None:
    """A logger of its own (no other handler sees its lines) writing to ``target``: a file
    path, appended to, or ``-`` for stderr; None where ``target`` is unset."""
    if not target:
        return None
    log = logging.Logger("nbserve.access_log")
    handler = logging.StreamHandler(sys.stderr) if target == "-" else logging.FileHandler(target)
    handler.setFormatter(ACCESS_LAYOUT)
    log.addHandler(handler)
    return log


def close_access_log(log: logging.Logger | None) -> None:
    for handler in list(log.handlers if log else ()):
        handler.close()
        log.removeHandler(handler)


def access_line(handler: RequestHandler) -> str:
    request = handler.request
    address = getattr(request.connection, "context", None)
    address = getattr(address, "address", None)
    client = f"/{address[0]}:{address[1]}" if isinstance(address, tuple) else f"/{request.remote_ip}"
    return (f'{client} "{request.method} {request.uri} {request.version}" '
            f"{handler.get_status()} {round(request.request_time() * 1000)} {handler.request_id}")
