"""The kernels serving in this Jupyter, as the extension sees them, and which one answers what.

A kernel counts while its announcement is there, its process lives, and this Jupyter server
manages it. A model name served by several kernels is answered by the newest.
"""

from __future__ import annotations

import json
import re
import time
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.web import HTTPError

from nbserve.api.announce import SECRET_HEADER, Announcement, announcements
from nbserve.api.routes import api_of

#: The model a TorchServe path is about: predictions/m, models/m, v1/models/m:predict, ...
_MODEL_IN_PATH = re.compile(r"^(?:predictions|explanations|models)/([^/?]+)|^v[12]/models/([^/:?]+)")


def model_of(path: str) -> str | None:
    match = _MODEL_IN_PATH.match(path)
    return (match.group(1) or match.group(2)) if match else None


class ServingKernels:
    def __init__(self, kernel_manager, runtime_dir: str, request_timeout: float,
                 cache_seconds: float):
        self.kernel_manager = kernel_manager
        self.runtime_dir = runtime_dir
        self.request_timeout = request_timeout
        self.cache_seconds = cache_seconds
        self._cached: tuple[float, dict] = (0.0, {})

    def list(self) -> list[Announcement]:
        """Serving kernels, newest first."""
        return [a for a in announcements(self.runtime_dir) if a.kernel_id in self.kernel_manager]

    def get(self, kernel_id: str) -> Announcement:
        for announcement in self.list():
            if announcement.kernel_id == kernel_id:
                return announcement
        if kernel_id in self.kernel_manager:
            raise HTTPError(404, f"Kernel {kernel_id} is not serving models: run %serve in it.")
        raise HTTPError(404, f"Kernel {kernel_id} does not exist in this Jupyter server "
                             "(it may have been shut down).")

    def request(self, announcement: Announcement, path: str, **kwargs) -> HTTPRequest:
        """A request to ``path`` on the kernel's server, carrying the kernel's secret."""
        headers = dict(kwargs.pop("headers", {}))
        headers[SECRET_HEADER] = announcement.secret
        url = f"{announcement.urls[api_of(path)]}/{path}"
        return HTTPRequest(url, headers=headers, request_timeout=self.request_timeout,
                           follow_redirects=False, decompress_response=False,
                           allow_nonstandard_methods=True, **kwargs)

    async def fetch(self, announcement: Announcement, path: str):
        try:
            return await AsyncHTTPClient().fetch(self.request(announcement, path), raise_error=False)
        except (OSError, HTTPClientError) as e:
            raise unreachable(announcement, e) from None

    async def models(self) -> dict[str, list[tuple[Announcement, dict]]]:
        """``{model name: [(kernel, its /models entry), ...]}``, newest kernel first."""
        served: dict[str, list[tuple[Announcement, dict]]] = {}
        for announcement in self.list():
            token = ""
            while True:
                query = "models?limit=1000" + (f"&next_page_token={quote(token)}" if token else "")
                try:
                    response = await self.fetch(announcement, query)
                except HTTPError:
                    break  # a kernel that stopped answering is left out of the listing
                page = json.loads(response.body)
                for entry in page.get("models", []):
                    served.setdefault(entry["modelName"], []).append((announcement, entry))
                token = page.get("nextPageToken")
                if not token:
                    break
        return served

    async def owner(self, path: str) -> Announcement:
        """The kernel that answers ``path``: the newest serving its model, or the newest at all."""
        kernels = self.list()
        if not kernels:
            raise HTTPError(503, "No kernel is serving models in this Jupyter: run %serve in one.")
        name = model_of(path)
        if name is None:
            return kernels[0]
        fetched_at, cached = self._cached
        serving = cached.get(name) if time.monotonic() - fetched_at < self.cache_seconds else None
        if not serving:  # not seen lately: ask the kernels, the model may be new
            models = await self.models()
            self._cached = (time.monotonic(), models)
            serving = models.get(name)
        if not serving:
            raise HTTPError(404, f"Model not found: {name} (no kernel in this Jupyter serves it).")
        return serving[0][0]


def unreachable(announcement: Announcement, error: Exception) -> HTTPError:
    return HTTPError(503, f"Kernel {announcement.kernel_id} is not answering at "
                          f"{announcement.urls['inference']} ({error}); it may be restarting or "
                          f"have been shut down.")


def merged_metrics(texts: list[tuple[str, str]]) -> str:
    """Prometheus texts of several kernels as one, each sample labelled with its kernel id."""
    seen, lines = set(), []
    for kernel_id, text in texts:
        for line in text.splitlines():
            if line.startswith("#"):
                if line not in seen:
                    seen.add(line)
                    lines.append(line)
            elif line.strip():
                name, _, rest = line.partition("{")
                if rest:
                    lines.append(f'{name}{{kernel_id="{kernel_id}",{rest}')
                else:
                    metric, _, value = line.partition(" ")
                    lines.append(f'{metric}{{kernel_id="{kernel_id}"}} {value}')
    return "\n".join(lines) + "\n"
