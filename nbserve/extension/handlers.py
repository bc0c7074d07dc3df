"""The extension's routes under ``{base_url}nbserve/``, behind Jupyter's authentication.

A request's path: Jupyter authenticates and authorizes it (resource ``nbserve``; registering,
replacing or unregistering a model runs an archive's code in the kernel, so those need what
running code in a kernel needs, ``execute`` on ``kernels``); the kernel that answers it is
chosen (:mod:`nbserve.extension.kernels`); its body streams to that kernel's loopback server
with the kernel's secret, and the answer streams back as the kernel sent it, under a content
type that no browser runs as a page on Jupyter's origin.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from jupyter_server.utils import ensure_async
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.httputil import parse_response_start_line
from tornado.web import HTTPError, stream_request_body

from nbserve.api.http.errors import write_error
from nbserve.api.routes import changes_models
from nbserve.extension.kernels import merged_metrics, unreachable

AUTH_RESOURCE = "nbserve"
_PAGE = Path(__file__).with_name("page.html")
#: Headers that belong to one hop (or to Jupyter) and are not forwarded.
_REQUEST_ONLY = {"host", "authorization", "cookie", "x-xsrftoken", "connection", "keep-alive",
                 "transfer-encoding", "te", "upgrade", "proxy-authorization"}
#: Answer headers kept from Jupyter's origin: they belong to one hop, or would let a handler's
#: answer set cookies, security policy or redirects for the whole Jupyter server.
_RESPONSE_ONLY = {"connection", "keep-alive", "transfer-encoding", "server", "date", "set-cookie",
                  "set-cookie2", "content-security-policy", "strict-transport-security",
                  "x-frame-options", "x-content-type-options", "location", "refresh", "link",
                  "clear-site-data", "www-authenticate"}
#: Content types that reach Jupyter's origin as they are: none of them runs as a page. Any
#: other (HTML, SVG, every XML type, and those not known yet) is sent as a download.
_PASSIVE_CONTENT = {"application/json", "text/plain", "text/csv", "text/event-stream",
                    "application/octet-stream", "image/png", "image/jpeg", "image/gif",
                    "image/webp", "image/bmp", "image/tiff", "audio/wav", "audio/mpeg"}


class NBServeHandler(ExtensionHandlerMixin, APIHandler):
    """Errors as TorchServe's JSON, so clients read them as they read the kernel's own."""

    auth_resource = AUTH_RESOURCE

    @property
    def kernels(self):
        return self.settings["nbserve_kernels"]

    def write_error(self, status_code: int, **kwargs) -> None:
        write_error(self, status_code, **kwargs)


class KernelsHandler(NBServeHandler):
    """``GET nbserve/kernels``: the kernels serving, newest first, and their models."""

    @authorized
    async def get(self):
        served = await self.kernels.models()
        self.finish(json.dumps({"kernels": [
            {"kernelId": k.kernel_id, "started": k.started,
             "models": sorted(name for name, where in served.items()
                              if any(a.kernel_id == k.kernel_id for a, _ in where))}
            for k in self.kernels.list()]}, indent=2))


class AllModelsHandler(NBServeHandler):
    """``GET nbserve/models``: every kernel's models, each with the kernels serving it."""

    @authorized
    async def get(self):
        served = await self.kernels.models()
        self.finish(json.dumps({"models": [
            {"modelName": name, "modelUrl": where[0][1].get("modelUrl"),
             "kernels": [a.kernel_id for a, _ in where]}
            for name, where in sorted(served.items())]}, indent=2))


class MergedMetricsHandler(NBServeHandler):
    """``GET nbserve/metrics``: every kernel's metrics, labelled with its ``kernel_id``."""

    @authorized
    async def get(self):
        texts = []
        for kernel in self.kernels.list():
            try:
                response = await self.kernels.fetch(kernel, "metrics")
            except HTTPError:
                continue
            texts.append((kernel.kernel_id, response.body.decode()))
        self.finish(merged_metrics(texts), set_content_type="text/plain; version=0.0.4")


class _Forwarding(NBServeHandler):
    """A request sent on to a kernel's loopback server, and its answer streamed back."""

    async def prepare(self):
        await super().prepare()  # Jupyter's identity, Host, Origin and XSRF checks
        # Who may call is settled here, before anything reaches a kernel: with
        # jupyter-server's defaults (allow_unauthenticated_access, AllowAllAuthorizer) a request
        # without credentials would pass both checks below, were it not for the first.
        if not self.current_user:
            raise HTTPError(403, "Log in to Jupyter, or send its token, to call the models.")
        action = {"GET": "read", "HEAD": "read"}.get(self.request.method, "write")
        await self._require(action, AUTH_RESOURCE)
        self._content_type = "application/json"
        #: Whether the answer goes out as a download (its content type is not passive).
        self._download = False
        self.set_header("X-Content-Type-Options", "nosniff")

    def _send(self, kernel, path: str, **body) -> None:
        """Start the request to ``kernel`` (``body``: HTTPRequest's ``body`` or
        ``body_producer``); its answer streams back as it comes."""
        self.kernel = kernel
        if self.request.query:
            path += "?" + self.request.query
        headers = {k: v for k, v in self.request.headers.get_all() if k.lower() not in _REQUEST_ONLY}
        request = self.kernels.request(
            kernel, path, method=self.request.method, headers=headers,
            header_callback=self._on_header, streaming_callback=self._on_chunk, **body)
        self._upstream = asyncio.ensure_future(
            AsyncHTTPClient().fetch(request, raise_error=False))

    async def _require(self, action: str, resource: str, why: str = "") -> None:
        if not await ensure_async(self.authorizer.is_authorized(
                self, self.current_user, action, resource)):
            raise HTTPError(403, f"User is not authorized to {action} on resource: {resource}"
                                 + (f" ({why})." if why else "."))

    def _on_header(self, line: str) -> None:
        if line.startswith("HTTP/"):
            start = parse_response_start_line(line.strip())
            if start.code != 100:
                self.set_status(start.code, start.reason)
        elif line.strip():
            name, _, value = (part.strip() for part in line.partition(":"))
            lower = name.lower()
            if lower.startswith("access-control-") or lower in _RESPONSE_ONLY:
                return
            if lower == "content-disposition" and self._download:
                return  # a download it stays
            if lower == "content-type":
                if value.split(";")[0].strip().lower() not in _PASSIVE_CONTENT:
                    value, self._download = "application/octet-stream", True
                    self.set_header("Content-Disposition", "attachment")
                self._content_type = value  # APIHandler.finish would set its own otherwise
            self.set_header(name, value)

    def _on_chunk(self, chunk: bytes) -> None:
        self.write(chunk)
        self.flush()

    async def _answer(self) -> None:
        try:
            await self._upstream
        except (OSError, HTTPClientError) as e:
            raise unreachable(self.kernel, e) from None
        self.finish(set_content_type=self._content_type)


@stream_request_body
class ProxyHandler(_Forwarding):
    """Any other TorchServe path, streamed to the kernel that answers it and back."""

    async def prepare(self):
        await super().prepare()
        kernel_id, path = self.path_kwargs.get("kernel_id"), self.path_kwargs["path"]
        if changes_models(self.request.method, path):
            await self._require("execute", "kernels", "a model's archive runs its code in the "
                                                      "kernel, as a cell does")
        kernel = self.kernels.get(kernel_id) if kernel_id else await self.kernels.owner(path)
        self._body: asyncio.Queue = asyncio.Queue()
        has_body = self.request.method in ("POST", "PUT", "PATCH")
        self._send(kernel, path, body_producer=self._produce if has_body else None)

    async def data_received(self, chunk: bytes) -> None:
        self._body.put_nowait(chunk)

    async def _produce(self, write) -> None:
        while (chunk := await self._body.get()) is not None:
            await write(chunk)

    async def _forward(self, **_) -> None:
        self._body.put_nowait(None)
        await self._answer()

    get = authorized(_forward)
    post = authorized(_forward)
    put = authorized(_forward)
    delete = authorized(_forward)


class OpenAICompletionsHandler(_Forwarding):
    """``POST nbserve/v1/chat/completions`` and ``/v1/completions``: OpenAI's client with
    ``base_url=f"{jupyter_url}nbserve/v1"`` and Jupyter's token as its ``api_key``; the model
    named in the body picks the kernel, its tokens stream back as the kernel sends them."""

    @authorized
    async def post(self, path: str):
        try:
            model = json.loads(self.request.body or b"{}").get("model")
        except (ValueError, AttributeError):
            model = None
        if not isinstance(model, str) or not model:
            raise HTTPError(400, "You must provide a model parameter.")
        self._send(await self.kernels.owner(f"predictions/{model}"), path, body=self.request.body)
        await self._answer()


class OpenAIModelsHandler(NBServeHandler):
    """``GET nbserve/v1/models``: every kernel's language models, as OpenAI lists them."""

    @authorized
    async def get(self):
        cards = {}
        for kernel in self.kernels.list():
            try:
                response = await self.kernels.fetch(kernel, "v1/models")
                listed = json.loads(response.body).get("data", []) if response.code == 200 else []
            except (HTTPError, ValueError):
                continue
            for card in listed:
                cards.setdefault(card["id"], card)  # the newest kernel's, as requests go there
        self.finish(json.dumps({"object": "list", "data": list(cards.values())}))


class PageHandler(ExtensionHandlerMixin, JupyterHandler):
    """``nbserve/``: the models served in this Jupyter, and a drop zone to try one."""

    auth_resource = AUTH_RESOURCE

    @authorized
    def get(self):
        self.xsrf_token  # sets the _xsrf cookie the page's PUTs send back, as Jupyter's pages do
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(_PAGE.read_text())
