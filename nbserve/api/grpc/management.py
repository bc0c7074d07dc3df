"""TorchServe's gRPC management service over the management core (:mod:`nbserve.api.management`),
as REST is: ``msg`` is the REST API's JSON body for ListModels and DescribeModel, and its
``status`` text for the calls that change something, as TorchServe answers them. proto3 has no
"unset": a zero or empty field means the call did not give it."""

from __future__ import annotations

from nbserve.api.grpc import messages
from nbserve.api.grpc.service import Service, json_message
from nbserve.api.management import Registration


class ManagementService(Service):
    NAME = f"{messages.MANAGEMENT}.ManagementAPIsService"
    KEY = "management"

    def _answer(self, value) -> object:
        return messages.ManagementResponse(msg=json_message(value))

    def _status(self, answer: dict) -> object:
        return messages.ManagementResponse(msg=answer["status"])

    def ListModels(self, request, context):  # noqa: N802 - TorchServe's RPC names
        return self._answer(self.management.list_models(request.limit or 100,
                                                        request.next_page_token))

    def DescribeModel(self, request, context):  # noqa: N802
        return self._answer(self.management.describe(request.model_name,
                                                     request.model_version or None))

    def RegisterModel(self, request, context):  # noqa: N802
        call = Registration(
            url=request.url, model_name=request.model_name or None,
            handler=request.handler or None, batch_size=request.batch_size or None,
            max_batch_delay=request.max_batch_delay or None,
            initial_workers=request.initial_workers or None,
            response_timeout=request.response_timeout or None,
            synchronous=request.synchronous)
        return self._status(self.management.register(call, over="gRPC")[1])

    def ScaleWorker(self, request, context):  # noqa: N802
        return self._status(self.management.scale(
            request.model_name, request.model_version or None, request.min_worker or None,
            request.max_worker or None, request.synchronous)[1])

    def SetDefault(self, request, context):  # noqa: N802
        return self._status(self.management.set_default(request.model_name,
                                                        request.model_version))

    def UnregisterModel(self, request, context):  # noqa: N802
        return self._status(self.management.unregister(
            request.model_name, request.model_version or None, over="gRPC"))
