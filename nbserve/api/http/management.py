"""The management API over REST: each route reads its parameters and calls the management core
(:mod:`nbserve.api.management`), which gRPC calls too. Calls that load or unload a model run off
the event loop, so inference keeps flowing. ``GET /token`` replaces a key."""

from __future__ import annotations

import asyncio
import json

from nbserve.api.http.base import APIHandler
from nbserve.api.management import Management, Registration, describe
from nbserve.api.tokens import API_KEY, ROTATING
from nbserve.errors import BadRequest, Forbidden
from nbserve.serving.answers import encode_answer


class _ManagementHandler(APIHandler):
    """What the management routes share: the management core, and query parameters checked."""

    @property
    def management(self) -> Management:
        return self.server.management

    def _bool(self, name: str, default: bool) -> bool:
        return self.get_query_argument(name, str(default)).lower() == "true"

    @staticmethod
    def _off_loop(function, *args, **kwargs):
        return asyncio.get_running_loop().run_in_executor(None, lambda: function(*args, **kwargs))

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
        self.write_json(self.management.list_models(self._int("limit", 100),
                                                    self._int("next_page_token", 0)))

    async def post(self):
        call = Registration(
            url=self.get_query_argument("url", None),
            model_name=self.get_query_argument("model_name", None),
            handler=self.get_query_argument("handler", None),
            batch_size=self._int("batch_size"),
            max_batch_delay=self._int("max_batch_delay"),
            initial_workers=self._int("initial_workers"),
            response_timeout=self._int("response_timeout"),
            synchronous=self._bool("synchronous", True))
        # Off the event loop: a download waits on the network in threads of its own, and
        # workers start in the threads that load and unload models.
        source = await asyncio.get_running_loop().run_in_executor(
            self.management.model_store.downloads,
            lambda: self.management.locate(call, trusted=self.via_jupyter))
        status, answer = await self._off_loop(self.management.register, call, source)
        self.write_json(answer, status=status)


class ModelHandler(_ManagementHandler):
    """``GET``/``PUT``/``DELETE /models/{model}[/{version}|/all]``."""

    async def get(self, model: str, version: str | None = None):
        versions = self.management.versions(model, version)
        described = [describe(v) for v in versions]
        if self._bool("customized", False):
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
        status, answer = await self._off_loop(
            self.management.scale, model, version, self._int("min_worker"),
            self._int("max_worker"), self._bool("synchronous", False))
        self.write_json(answer, status=status)

    async def delete(self, model: str, version: str | None = None):
        self.write_json(await self._off_loop(self.management.unregister, model, version,
                                             trusted=self.via_jupyter))


class WorkflowsHandler(_ManagementHandler):
    """``GET /workflows`` (paged) and ``POST /workflows?url=...&workflow_name=...``."""

    def get(self):
        self.write_json(self.management.list_workflows(self._int("limit", 100),
                                                       self._int("next_page_token", 0)))

    async def post(self):
        self.write_json(await self._off_loop(
            self.management.register_workflow, self.get_query_argument("url", None),
            self.get_query_argument("workflow_name", None), trusted=self.via_jupyter))


class WorkflowHandler(_ManagementHandler):
    """``GET``/``DELETE /workflows/{workflow}``."""

    def get(self, name: str):
        self.write_json(self.management.describe_workflow(name))

    async def delete(self, name: str):
        self.write_json(await self._off_loop(self.management.unregister_workflow, name,
                                             trusted=self.via_jupyter))


class SetDefaultHandler(_ManagementHandler):
    """``PUT /models/{model}/{version}/set-default``."""

    def put(self, model: str, version: str):
        self.write_json(self.management.set_default(model, version))


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
