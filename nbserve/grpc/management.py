"""TorchServe's gRPC management service: ``msg`` is the REST API's JSON body for ListModels and
DescribeModel, and its ``status`` text for the calls that change something, as TorchServe
answers them."""

from __future__ import annotations

from nbserve.grpc import json_message, messages
from nbserve.grpc.service import Service
from nbserve.http.base import refuse_model_api
from nbserve.http.management import (default_set, models_page, registered, scaled,
                                     unregistered, versions_of)


class ManagementService(Service):
    NAME = f"{messages.MANAGEMENT}.ManagementAPIsService"
    KEY = "management"

    def _answer(self, value) -> object:
        return messages.ManagementResponse(msg=json_message(value))

    def _status(self, answer: dict) -> object:
        return messages.ManagementResponse(msg=answer["status"])

    def ListModels(self, request, context):  # noqa: N802 - TorchServe's RPC names
        return self._answer(models_page(self.engine, request.limit or 100,
                                        request.next_page_token))

    def DescribeModel(self, request, context):  # noqa: N802
        versions = versions_of(self.engine, request.model_name, request.model_version or None)
        return self._answer([v.describe() for v in versions])

    def RegisterModel(self, request, context):  # noqa: N802
        if not self.http.config.enable_model_api:
            raise refuse_model_api("Registering models", over="gRPC")
        source = self.http.model_store.resolve(request.url)
        version = self.engine.register(
            source, model_name=request.model_name or None, handler=request.handler or None,
            batch_size=request.batch_size or None, max_batch_delay=request.max_batch_delay or None,
            initial_workers=request.initial_workers or None,
            response_timeout=request.response_timeout or None)
        return self._status(registered(version))

    def ScaleWorker(self, request, context):  # noqa: N802
        target = self.engine.get(request.model_name, request.model_version or None)
        min_workers = request.min_worker or target.config.min_workers
        max_workers = max(request.max_worker or target.config.max_workers, min_workers)
        self.engine.scale(request.model_name, request.model_version or None,
                          min_workers=min_workers, max_workers=max_workers)
        return self._status(scaled(request.model_name, min_workers))

    def SetDefault(self, request, context):  # noqa: N802
        self.engine.set_default(request.model_name, request.model_version)
        return self._status(default_set(request.model_name, request.model_version))

    def UnregisterModel(self, request, context):  # noqa: N802
        if not self.http.config.enable_model_api:
            raise refuse_model_api("Unregistering models", over="gRPC")
        self.engine.get(request.model_name, request.model_version or None)
        self.engine.unregister(request.model_name, request.model_version or None)
        return self._status(unregistered(request.model_name))
