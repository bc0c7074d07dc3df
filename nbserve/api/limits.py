"""Limits on what a client can send: body size on every route, connections, idle and slow
clients, and how long a refused body is read before the connection closes.

A full server makes room rather than turn a newcomer away: it closes the connection that has
least claim to stay (:meth:`LimitedHTTPServer.make_room`): one that never showed a valid key
before one that did, the longest idle first, and never one whose keyed request is being
answered. So a flood of connections without the key cannot lock out a client that has it.

A body over ``max_request_size`` is never kept: its bytes are counted and dropped as they come.
An answer sent while the client is still sending makes the client's TCP stack see a reset
before it reads the answer (Python's ``requests`` and ``urllib`` send no ``Expect:
100-continue``), so a refused request's body is read to its end and then answered, as nginx's
"lingering close" does, for at most ``lingering_size`` bytes and ``lingering_time`` seconds;
past those, the answer goes at once and the connection closes (a timer enforces the time, so a
client that stops sending is answered too). A client that sends ``Expect: 100-continue`` (curl)
is answered before it sends anything.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field

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
        self.refusal = refusal
        self._chunks = []

    def add(self, chunk: bytes) -> bool:
        """Take a chunk; False once a refused body has been read past ``lingering_size`` (the
        answer must go now; past ``lingering_time`` the caller's timer sends it)."""
        self.size += len(chunk)
        if self.refusal is None and self.size > self.limit:
            self.refusal = self._too_large(self.size)
            self._chunks = []
        if self.refusal is not None:
            return self.size <= self.lingering_size
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


@dataclass
class Caller:
    """What a server knows of one connection's client, to choose which to close when full."""

    #: Whether a request on this connection passed the API's checks (its key, Host, Origin).
    trusted: bool = False
    #: Whether such a request is being answered now.
    answering: bool = False
    #: When the connection last finished a request (or opened).
    idle_since: float = field(default_factory=time.monotonic)

    def begin(self) -> None:
        self.trusted = self.answering = True

    def end(self) -> None:
        self.answering = False
        self.idle_since = time.monotonic()


class LimitedHTTPServer(HTTPServer):
    """tornado's server, holding at most ``max_connections``; each connection's stream carries
    its :class:`Caller` (``stream.caller``) for the API's handlers to keep."""

    def initialize(self, *args, max_connections: int, **kwargs):
        super().initialize(*args, **kwargs)
        self.max_connections = max_connections

    def handle_stream(self, stream, address) -> None:
        if len(self._connections) >= self.max_connections and \
                len(self._open()) >= self.max_connections and not self.make_room():
            stream.close()
            return
        stream.caller = Caller()
        super().handle_stream(stream, address)

    def make_room(self) -> bool:
        """Close the connection with least claim to stay: untrusted before trusted, idle
        longest first, never one answering a trusted request. False if every one is."""
        candidates = [c for c in self._open() if not c.stream.caller.answering]
        if not candidates:
            return False
        least = min(candidates, key=lambda c: (c.stream.caller.trusted, c.stream.caller.idle_since))
        least.stream.close()
        return True

    def _open(self) -> list:
        """The connections still open (a closed one leaves ``_connections`` a moment later)."""
        return [c for c in self._connections if not c.stream.closed()]


def allow_open_files(count: int) -> None:
    """Raise this process's open-file limit towards ``count`` where the hard limit allows, so
    ``max_connections`` is not cut short by the default soft limit (often 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count if hard == resource.RLIM_INFINITY else min(count, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
