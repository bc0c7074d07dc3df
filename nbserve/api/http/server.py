"""One HTTP server for the three APIs, on a thread and event loop of its own.

Its own thread, so that a notebook cell that keeps the kernel busy never blocks it; inference
never blocks its event loop either, since the engine answers through futures. ``stop()``
stops accepting, lets the requests in flight finish, then closes.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import ssl
import threading
import time
from collections import deque
from pathlib import Path
from urllib.parse import urlsplit

from tornado.netutil import bind_sockets
from tornado.web import Application

from nbserve._version import __version__
from nbserve.api import tracing
from nbserve.api.access import Access
from nbserve.api.http import inference, management, metrics, openai
from nbserve.api.http.access_log import access_line, close_access_log, open_access_log
from nbserve.api.http.base import NotFoundHandler
from nbserve.api.limits import LimitedHTTPServer, allow_open_files
from nbserve.api.management import Management
from nbserve.api.routes import API_NAMES, of_api
from nbserve.api.tokens import TokenAuthorization
from nbserve.config import ServerConfig
from nbserve.errors import BadRequest
from nbserve.store.model_store import ModelStore

logger = logging.getLogger(__name__)

#: The handler that answers each route of :data:`nbserve.api.routes.ROUTES`, by the route's name.
HANDLERS = {
    "ping": inference.PingHandler,
    "api-description": inference.ApiDescriptionHandler,
    "openai-models": openai.ModelsHandler,
    "openai-chat": openai.ChatCompletionsHandler,
    "openai-completions": openai.TextCompletionsHandler,
    "openai-predictions": openai.CompletionsHandler,
    "predictions": inference.PredictionHandler,
    "explanations": inference.ExplanationHandler,
    "kserve-v1-predict": inference.KServeV1Handler,
    "kserve-v1-explain": inference.KServeV1ExplainHandler,
    "kserve-v1-model": inference.KServeModelHandler,
    "kserve-v2-health": inference.KServeV2HealthHandler,
    "kserve-v2-infer": inference.KServeV2InferHandler,
    "kserve-v2-model": inference.KServeModelHandler,
    "kserve-v2-model-ready": inference.KServeModelHandler,
    "token": management.TokenHandler,
    "models": management.ModelsHandler,
    "set-default": management.SetDefaultHandler,
    "workflows": management.WorkflowsHandler,
    "workflow": management.WorkflowHandler,
    "wfpredict": inference.WorkflowPredictionHandler,
    "model": management.ModelHandler,
    "metrics": metrics.MetricsHandler,
}

#: tornado's own body limit is set out of the way: APIHandler answers 413 itself, as JSON.
_UNLIMITED = 2**40


class Server:
    """TorchServe's inference, management and metrics APIs over an engine."""

    def __init__(self, engine, config: ServerConfig | None = None, secret: str | None = None,
                 key_file: str | os.PathLike = "key_file.json"):
        """``key_file``: where the keys are written when token authorization is on (TorchServe
        writes ``key_file.json`` in the folder it starts in)."""
        self.engine = engine
        self.config = config or ServerConfig()
        #: Proves a request was forwarded by the jupyter-server extension, whose user is
        #: authenticated by Jupyter (and may run code in the kernel anyway).
        self.secret = secret
        self.key_file = Path(key_file)
        #: The keys, once started with token authorization on; None when it is off.
        self.tokens: TokenAuthorization | None = None
        #: The Host, Origin and CORS checks of each API, from its address.
        self.access: dict[str, Access] = {}
        #: Where registrations' archives come from (``POST /models?url=``).
        self.model_store = self._store(self.config.model_store)
        #: Where ``POST /workflows?url=`` finds .war files, if not in the model store.
        self.workflow_store = (self._store(self.config.workflow_store)
                               if self.config.workflow_store else None)
        #: TorchServe's management calls, which gRPC answers too (nbserve.api.management).
        self.management = Management(engine, self.config, self.model_store, self.workflow_store)
        self.urls: dict[str, str] = {}
        self._in_flight = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._servers: list[LimitedHTTPServer] = []
        #: ``{api: address}`` for each API that found its address taken and took a free port.
        self.moved: dict[str, str] = {}
        #: TorchServe's gRPC APIs, where config.properties enables them (nbserve.api.grpc).
        self.grpc = None
        #: Where each request's line goes (nbserve.api.http.access_log); None: nowhere.
        self.access_log = None

    def start(self, fallback: frozenset[str] = frozenset()) -> Server:
        """Bind the three addresses and serve; OSError names an address that is taken.

        An API in ``fallback`` whose address is taken (another kernel serving, say) binds a
        free port on the same host instead, and is named in :attr:`moved`.
        """
        sockets = {}
        tls = _tls_context(self.config)
        try:
            for api in API_NAMES:
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
        self.access = {api: Access(self.config, self.config.values[f"{api}_address"])
                       for api in API_NAMES}
        if self.config.token_authorization:
            self.tokens = TokenAuthorization(self.key_file, self.config.token_expiration_min)
        allow_open_files(len(API_NAMES) * self.config.max_connections + 256)
        self.access_log = open_access_log(self.config.access_log)
        tracing.configure_from_environment()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sockets, tls, started),
                                        name="nbserve-http", daemon=True)
        self._thread.start()
        started.wait()
        if self.config.enable_grpc:
            try:
                self.start_grpc()
            except BaseException:
                self.stop()
                raise
        return self

    def start_grpc(self) -> None:
        """TorchServe's gRPC APIs beside these, with the same management core and keys."""
        try:
            from nbserve.api.grpc.server import GrpcServer
        except ImportError as e:
            raise BadRequest(f"enable_grpc needs grpcio: pip install 'nbserve[grpc]' ({e}).") from None
        self.grpc = GrpcServer(self.management, self.tokens).start()

    def _run(self, sockets: dict, tls: dict[str, ssl.SSLContext], started: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        #: Runs ``fn(*args)`` on this event loop, from a worker's thread (a streamed part).
        self.call_in_loop = LoopCalls(self._loop)
        for api, socks in sockets.items():
            arguments = {"server": self, "api": api}
            app = Application([(route.pattern, HANDLERS[route.name],
                                {**arguments, "route": route.openapi}) for route in of_api(api)],
                              default_handler_class=NotFoundHandler,
                              default_handler_args=arguments)
            server = LimitedHTTPServer(
                app, max_body_size=_UNLIMITED, max_buffer_size=_UNLIMITED, ssl_options=tls.get(api),
                max_connections=self.config.max_connections,
                idle_connection_timeout=self.config.idle_connection_timeout,
                body_timeout=self.config.body_timeout)
            server.add_sockets(socks)
            self._servers.append(server)
            host, port = socks[0].getsockname()[:2]
            host = f"[{host}]" if ":" in host else host
            self.urls[api] = f"{'https' if api in tls else 'http'}://{host}:{port}"
        started.set()
        self._loop.run_forever()
        self._loop.close()

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, wait (up to ``timeout``) for requests in flight, then close."""
        if self._loop is None or self._thread is None:
            return
        timeout = self.config.default_response_timeout if timeout is None else timeout
        if self.grpc is not None:
            self.grpc.stop()
            self.grpc = None
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
        if self.tokens is not None:
            self.tokens.remove()
        self.model_store.close()
        if self.workflow_store is not None:
            self.workflow_store.close()
        close_access_log(self.access_log)

    def _store(self, folder: str | None) -> ModelStore:
        return ModelStore(folder, self.config.allows_url,
                          max_download_size=self.config.max_download_size,
                          download_timeout=self.config.download_timeout)

    def request_started(self) -> None:
        self._in_flight += 1

    def request_finished(self) -> None:
        self._in_flight -= 1

    def log_access(self, handler) -> None:
        """The answered request's line in the access log, if there is one."""
        if self.access_log is not None:
            self.access_log.info(access_line(handler))

    @staticmethod
    def openapi(api: str) -> dict:
        """An OpenAPI 3 document of the paths ``api`` answers."""
        paths = {}
        for route in of_api(api):
            doc = (HANDLERS[route.name].__doc__ or route.openapi).strip().splitlines()[0]
            paths[route.openapi] = {method.lower(): {"description": doc,
                                                     "responses": {"200": {"description": "OK"}}}
                                    for method in route.methods}
        return {"openapi": "3.0.1",
                "info": {"title": "TorchServe APIs, served by nbserve", "version": __version__},
                "paths": paths}


class LoopCalls:
    """Calls into an event loop from other threads, run together: one wake-up of the loop for
    all the parts a decode step streams to its requests, not one each."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._calls: deque = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def __call__(self, fn, *args) -> None:
        with self._lock:
            self._calls.append((fn, args))
            if self._scheduled:
                return
            self._scheduled = True
        self.loop.call_soon_threadsafe(self._run)

    def _run(self) -> None:
        with self._lock:
            calls, self._calls, self._scheduled = self._calls, deque(), False
        for fn, args in calls:
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - one request's failure, not its neighbours'
                logger.exception("Writing a streamed part failed")


def _with_port(address: str, port: int) -> str:
    parts = urlsplit(address)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return parts._replace(netloc=f"{host}:{port}").geturl()


def _tls_context(config: ServerConfig) -> dict[str, ssl.SSLContext]:
    """A TLS context for each API whose address is ``https://``, from TorchServe's PEM
    settings (``certificate_file``, ``private_key_file``)."""
    https = [api for api in API_NAMES if urlsplit(config.values[f"{api}_address"]).scheme == "https"]
    if not https:
        return {}
    if not (config.certificate_file and config.private_key_file):
        raise BadRequest(f"The {https[0]} address is https:// but certificate_file and "
                         "private_key_file (PEM) are not both set in config.properties.")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        try:
            context.load_cert_chain(config.certificate_file, config.private_key_file)
        except ssl.SSLError as e:
            if "KEY_TOO_SMALL" not in str(e):
                raise
            # A key OpenSSL 3 finds too weak at its default level (TorchServe's own test
            # certificate has 1,024 bits, which Java accepts): served, and said.
            logger.warning("certificate_file %s has a key too small for OpenSSL's default "
                           "security level (%s); serving it anyway. Use a key of 2048 bits or "
                           "more.", config.certificate_file, e.reason)
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
            context.load_cert_chain(config.certificate_file, config.private_key_file)
    except (OSError, ssl.SSLError) as e:
        raise BadRequest(f"Cannot use certificate_file {config.certificate_file} with "
                         f"private_key_file {config.private_key_file}: {e}. Both must be PEM "
                         "files, the key unencrypted.") from None
    return {api: context for api in https}


def _bind(api: str, address: str):
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https"):
        raise BadRequest(f"{api}_address {address}: use http:// or https://.")
    default_port = 443 if parts.scheme == "https" else 80
    host, port = parts.hostname or "127.0.0.1", parts.port if parts.port is not None else default_port
    try:
        return bind_sockets(port, host, reuse_port=False)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise OSError(e.errno, f"The {api} address {address} is in use; choose another with "
                                   f"--{api}-address (port 0 picks a free one).") from None
        raise
