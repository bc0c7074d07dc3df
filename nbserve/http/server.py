"""One HTTP server for the three APIs, on a thread and event loop of its own.

Its own thread, so that a notebook cell that keeps the kernel busy never blocks it; inference
never blocks its event loop either, since the engine answers through futures. ``stop()``
stops accepting, lets the requests in flight finish, then closes.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import threading
import time
from urllib.parse import urlsplit

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application

from nbserve import __version__
from nbserve.config import ServerConfig
from nbserve.http import inference, management, metrics
from nbserve.http.base import NotFoundHandler

API_ROUTES = {
    "inference": [
        (r"/ping", inference.PingHandler),
        (r"/", inference.ApiDescriptionHandler),
        (r"/predictions/([^/]+)(?:/([^/]+))?", inference.PredictionHandler),
        (r"/v1/models/([^/:]+):predict", inference.KServeV1Handler),
        (r"/v1/models/([^/:]+)", inference.KServeModelHandler),
        (r"/v2/health/(live|ready)", inference.KServeV2HealthHandler),
        (r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer", inference.KServeV2InferHandler),
        (r"/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready)?", inference.KServeModelHandler),
    ],
    "management": [
        (r"/", inference.ApiDescriptionHandler),
        (r"/models", management.ModelsHandler),
        (r"/models/([^/]+)/([^/]+)/set-default", management.SetDefaultHandler),
        (r"/models/([^/]+)(?:/([^/]+))?", management.ModelHandler),
    ],
    "metrics": [
        (r"/metrics", metrics.MetricsHandler),
    ],
}

#: tornado's own body limit is set out of the way: BodyHandler answers 413 itself, as JSON.
_UNLIMITED = 2**40


class Server:
    """TorchServe's inference, management and metrics APIs over an engine."""

    def __init__(self, engine, config: ServerConfig | None = None, secret: str | None = None):
        self.engine = engine
        self.config = config or ServerConfig()
        #: Proves a request was forwarded by the jupyter-server extension, whose user is
        #: authenticated by Jupyter (and may run code in the kernel anyway).
        self.secret = secret
        self.urls: dict[str, str] = {}
        self._in_flight = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._servers: list[HTTPServer] = []
        #: ``{api: address}`` for each API that found its address taken and took a free port.
        self.moved: dict[str, str] = {}

    def start(self, fallback: frozenset[str] = frozenset()) -> Server:
        """Bind the three addresses and serve; OSError names an address that is taken.

        An API in ``fallback`` whose address is taken (another kernel serving, say) binds a
        free port on the same host instead, and is named in :attr:`moved`.
        """
        sockets = {}
        try:
            for api in API_ROUTES:
                address = self.config.values[f"{api}_address"]
                try:
                    sockets[api] = _bind(api, address)
                except OSError as e:
                    if api not in fallback or e.errno != errno.EADDRINUSE:
                        raise
                    sockets[api] = _bind(api, _with_port(address, 0))
                    self.moved[api] = address
        except BaseException:
            for socks in sockets.values():
                for sock in socks:
                    sock.close()
            raise
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sockets, started),
                                        name="nbserve-http", daemon=True)
        self._thread.start()
        started.wait()
        return self

    def _run(self, sockets: dict, started: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        for api, socks in sockets.items():
            app = Application([(pattern, handler, {"server": self}) for pattern, handler in API_ROUTES[api]],
                              default_handler_class=NotFoundHandler,
                              default_handler_args={"server": self})
            server = HTTPServer(app, max_body_size=_UNLIMITED, max_buffer_size=_UNLIMITED)
            server.add_sockets(socks)
            self._servers.append(server)
            host, port = socks[0].getsockname()[:2]
            self.urls[api] = f"http://{host}:{port}"
        started.set()
        self._loop.run_forever()
        self._loop.close()

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, wait (up to ``timeout``) for requests in flight, then close."""
        if self._loop is None or self._thread is None:
            return
        timeout = float(self.config.default_response_timeout) if timeout is None else timeout
        self._loop.call_soon_threadsafe(lambda: [s.stop() for s in self._servers])
        deadline = time.monotonic() + timeout
        while self._in_flight and time.monotonic() < deadline:
            time.sleep(0.02)

        async def close():
            for server in self._servers:
                await server.close_all_connections()
            self._loop.stop()

        self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(close()))
        self._thread.join(timeout=10)
        self._thread = None

    def request_started(self) -> None:
        self._in_flight += 1

    def request_finished(self) -> None:
        self._in_flight -= 1

    def resolve_archive(self, url: str):
        return management.resolve_archive(url, self.config.model_store, self.config.allows_url)

    def openapi(self, application: Application) -> dict:
        """An OpenAPI 3 document of the paths ``application`` answers."""
        paths = {}
        for rule in application.wildcard_router.rules:
            handler = rule.target
            methods = [m for m in ("get", "post", "put", "delete", "options")
                       if inspect.isfunction(getattr(handler, m, None))
                       and getattr(handler, m).__qualname__.split(".")[0] != "RequestHandler"]
            path = _openapi_path(rule.matcher.regex.pattern)
            paths[path] = {m: {"description": (handler.__doc__ or "").strip().splitlines()[0]
                               if handler.__doc__ else path,
                               "responses": {"200": {"description": "OK"}}} for m in methods}
        return {"openapi": "3.0.1",
                "info": {"title": "TorchServe APIs, served by nbserve", "version": __version__},
                "paths": paths}


def _openapi_path(pattern: str) -> str:
    path = pattern.rstrip("$")
    names = iter(["model_name", "model_version", "state", "ready"])
    path = path.replace("(?:/versions/([^/]+))?", "/versions/{model_version}")
    path = path.replace("(?:/([^/]+))?", "/{model_version}").replace("(/ready)?", "/ready")
    while "(" in path:
        start, end = path.index("("), path.index(")", path.index("(")) + 1
        path = path[:start] + "{" + next(names) + "}" + path[end:]
    return path.replace("{model_version}/{model_version}", "{model_version}")


def _with_port(address: str, port: int) -> str:
    parts = urlsplit(address)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return parts._replace(netloc=f"{host}:{port}").geturl()


def _bind(api: str, address: str):
    parts = urlsplit(address)
    if parts.scheme == "https":
        raise ValueError(f"{api}_address {address}: HTTPS is not supported yet; use http:// "
                         "behind a TLS proxy.")
    host, port = parts.hostname or "127.0.0.1", parts.port if parts.port is not None else 80
    try:
        return bind_sockets(port, host, reuse_port=False)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise OSError(e.errno, f"The {api} address {address} is in use; choose another with "
                                   f"--{api}-address (port 0 picks a free one).") from None
        raise
