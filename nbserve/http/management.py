"""The management API: list, describe, register, scale, unregister, set the default version.

Registering and unregistering over HTTP need ``enable_model_api=true``, as in TorchServe since
its 2023 fixes; an archive ``url`` must be in the model store or match ``allowed_urls``
(:mod:`nbserve.model_store`).
Calls that load or unload a model run off the event loop, so inference keeps flowing.
"""

from __future__ import annotations

import asyncio
import json

from nbserve.errors import BadRequest, Forbidden
from nbserve.http.base import APIHandler
from nbserve.protocol import encode_answer
from nbserve.tokens import API_KEY, ROTATING


class _ManagementHandler(APIHandler):
    """What the management routes share: integer query parameters, checked."""

    def _int(self, name: str, default: int | None = None) -> int | None:
        value = self.get_query_argument(name, None)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise BadRequest(f"Parameter {name} must be an integer, not {value!r}.") from None


class ModelsHandler(_ManagementHandler):
    """``GET /models`` (paged) and ``POST /models?url=...``."""

    def get(self):
        self.write_json(models_page(self.engine, self._int("limit", 100),
                                    self._int("next_page_token", 0)))

    async def post(self):
        self.require_model_api("Registering models")
        url = self.get_query_argument("url", None)
        if not url:
            raise BadRequest("Parameter url is required: the archive's name in the model store.")
        store = self.server.model_store
        source = await asyncio.get_running_loop().run_in_executor(store.downloads, store.resolve, url)
        options = {
            "model_name": self.get_query_argument("model_name", None),
            "handler": self.get_query_argument("handler", None),
            "batch_size": self._int("batch_size"),
            "max_batch_delay": self._int("max_batch_delay"),
            "initial_workers": self._int("initial_workers"),
            "response_timeout": self._int("response_timeout"),
        }
        # TorchServe's default is to answer once the workers run; synchronous=false answers
        # 202 at once, and the workers start behind the answer.
        synchronous = self.get_query_argument("synchronous", "true").lower() == "true"
        version = await _off_loop(self.engine.register, source, wait=synchronous, **options)
        if synchronous or version.config.min_workers == 0:
            self.write_json(registered(version))
        else:
            self.write_json({"status": "Processing worker updates..."}, status=202)


class ModelHandler(_ManagementHandler):
    """``GET``/``PUT``/``DELETE /models/{model}[/{version}|/all]``."""

    async def get(self, model: str, version: str | None = None):
        versions = versions_of(self.engine, model, version)
        described = [v.describe() for v in versions]
        if self.get_query_argument("customized", "false").lower() == "true":
            for entry, served in zip(described, versions):
                entry["customizedMetadata"] = await self._customized(served)
        self.write_json(described)

    async def _customized(self, served):
        """The handler's ``describe_handle`` answer, as TorchServe's ``customizedMetadata``: a
        request with its ``describe: True`` header; JSON as JSON, other text as text."""
        future = self.engine.submit(served.name, {"body": b""}, version=served.version,
                                    headers={"describe": "True"})
        text = encode_answer((await asyncio.wrap_future(future)).value)[0]
        try:
            return json.loads(text)
        except ValueError:
            return text.decode(errors="replace")

    async def put(self, model: str, version: str | None = None):
        target = self.engine.get(model, version)
        min_workers = self._int("min_worker", target.config.min_workers)
        max_workers = self._int("max_worker", max(min_workers, target.config.max_workers))
        synchronous = self.get_query_argument("synchronous", "false").lower() == "true"
        scaling = _off_loop(self.engine.scale, model, version, min_workers=min_workers,
                            max_workers=max_workers)
        if synchronous:
            await scaling
            self.write_json(scaled(model, min_workers))
        else:
            asyncio.ensure_future(scaling)
            self.write_json({"status": "Processing worker updates..."}, status=202)

    async def delete(self, model: str, version: str | None = None):
        self.require_model_api("Unregistering models")
        self.engine.get(model, version)  # 404 before anything is done
        await _off_loop(self.engine.unregister, model, version)
        self.write_json(unregistered(model))


class SetDefaultHandler(APIHandler):
    """``PUT /models/{model}/{version}/set-default``."""

    def put(self, model: str, version: str):
        self.engine.set_default(model, version)
        self.write_json(default_set(model, version))


class TokenHandler(APIHandler):
    """``GET /token?type=management|inference``, with the API key: replaces that key (in the
    key file too) and answers its new entry, as TorchServe 0.12's token API."""

    token_kind = API_KEY

    def get(self):
        if self.via_jupyter:  # a GET any page can send with Jupyter's cookie
            raise Forbidden("The kernel's keys are not replaced through Jupyter: they are not "
                            "the Jupyter user's to rotate. Call /token on the kernel's own "
                            "management API with its API key.")
        kind = self.get_query_argument("type", None)
        if self.server.tokens is None:
            raise BadRequest("Token authorization is off: there is no key to replace.")
        if kind not in ROTATING:
            raise BadRequest(f"Parameter type must be management or inference, not {kind!r}.")
        self.write_json({kind: self.server.tokens.rotate(kind)})


# TorchServe's answers, shared with its gRPC management service (nbserve.grpc.management).

def versions_of(engine, model: str, version: str | None) -> list:
    """The versions a describe call names: one (the default if None), or ``all``."""
    if version == "all":
        return list(engine.model(model).versions.values())
    return [engine.get(model, version)]


def models_page(engine, limit: int, start: int) -> dict:
    """``limit`` models from the ``start``-th, and the token of the next page if any."""
    models = engine.models()
    answer = {}
    if start + limit < len(models):
        answer["nextPageToken"] = str(start + limit)
    answer["models"] = [{"modelName": m.name, "modelUrl": m.default.archive.source.name}
                        for m in models[start:start + limit]]
    return answer


def registered(version) -> dict:
    return {"status": f'Model "{version.name}" Version: {version.version} registered with '
                      f"{len(version.workers)} initial workers"}


def scaled(model: str, workers: int) -> dict:
    return {"status": f"Workers scaled to {workers} for model: {model}"}


def default_set(model: str, version: str) -> dict:
    return {"status": f'Default version successfully updated for model "{model}" to "{version}"'}


def unregistered(model: str) -> dict:
    return {"status": f'Model "{model}" unregistered'}


def _off_loop(function, *args, **kwargs):
    return asyncio.get_running_loop().run_in_executor(None, lambda: function(*args, **kwargs))
