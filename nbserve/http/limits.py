"""Limits on what a client can send: body size on every route, connections, idle and slow
clients, and how long a refused body is read before the connection closes.

A body over ``max_request_size`` is never kept: its bytes are counted and dropped as they come.
An answer sent while the client is still sending makes the client's TCP stack see a reset
before it reads the answer (Python's ``requests`` and ``urllib`` send no ``Expect:
100-continue``), so a refused request's body is read to its end and then answered, as nginx's
"lingering close" does, for at most ``lingering_size`` bytes and ``lingering_time`` seconds;
past those, the answer goes at once and the connection closes. A client that sends
``Expect: 100-continue`` (curl) is answered before it sends anything.
"""

from __future__ import annotations

import resource
import time

from tornado.httpserver import HTTPServer

from nbserve.errors import NBServeError, RequestTooLarge


class RequestBody:
    """One request's body as it streams in: kept (up to ``limit``) only where the route takes a
    body, counted always, and a refusal held until the body has been read."""

    def __init__(self, headers, *, limit: int, keep: bool, lingering_size: int,
                 lingering_time: float):
        self.limit, self.keep = limit, keep
        self.lingering_size, self.lingering_time = lingering_size, lingering_time
        self.size = 0
        self._chunks: list[bytes] = []
        #: Why the request is refused, answered once its body is in.
        self.refusal: NBServeError | None = None
        self._refused_at = 0.0
        declared = headers.get("Content-Length", "")
        self.declared = int(declared) if declared.isdigit() else None
        chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        #: Whether the client will send a body whatever we answer first.
        self.coming = (chunked or bool(self.declared)) and \
            headers.get("Expect", "").lower() != "100-continue"

    def check_declared(self) -> None:
        """413 at once for a body declared over the limit."""
        if self.declared is not None and self.declared > self.limit:
            raise self._too_large(self.declared)

    def refuse(self, refusal: NBServeError) -> None:
        """Answer ``refusal`` once the body is in: now, if none is coming or it would be read
        past the lingering bounds."""
        if not self.coming or (self.declared or 0) > self.lingering_size:
            raise refusal
        self.refusal, self._refused_at = refusal, time.monotonic()
        self._chunks = []

    def add(self, chunk: bytes) -> bool:
        """Take a chunk; False once a refused body has been read past the lingering bounds (the
        answer must go now)."""
        self.size += len(chunk)
        if self.refusal is None and self.size > self.limit:
            self.refusal, self._refused_at = self._too_large(self.size), time.monotonic()
            self._chunks = []
        if self.refusal is not None:
            return (self.size <= self.lingering_size
                    and time.monotonic() - self._refused_at <= self.lingering_time)
        if self.keep:
            self._chunks.append(chunk)
        return True

    def check(self) -> None:
        """Raise the refusal held for this request, if any."""
        if self.refusal is not None:
            raise self.refusal

    @property
    def value(self) -> bytes:
        self.check()
        return b"".join(self._chunks)

    def _too_large(self, size: int) -> RequestTooLarge:
        return RequestTooLarge(f"Request body of {size} bytes is larger than max_request_size "
                               f"({self.limit} bytes); raise max_request_size to send it.")


class LimitedHTTPServer(HTTPServer):
    """tornado's server, closing connections past ``max_connections`` as they arrive."""

    def initialize(self, *args, max_connections: int, **kwargs):
        super().initialize(*args, **kwargs)
        self.max_connections = max_connections

    def handle_stream(self, stream, address) -> None:
        if len(self._connections) >= self.max_connections:
            stream.close()
            return
        super().handle_stream(stream, address)


def allow_open_files(count: int) -> None:
    """Raise this process's open-file limit towards ``count`` where the hard limit allows, so
    ``max_connections`` is not cut short by the default soft limit (often 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count if hard == resource.RLIM_INFINITY else min(count, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
