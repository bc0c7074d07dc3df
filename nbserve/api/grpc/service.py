"""What both gRPC services share: methods found by name from the service's descriptor, the
caller's key checked, and nbserve's errors ended with the gRPC status that says the same."""

from __future__ import annotations

import functools
import json

import grpc

from nbserve.api.access import check_token
from nbserve.api.grpc import messages
from nbserve.api.management import Management
from nbserve.api.tokens import TokenAuthorization
from nbserve.errors import InvalidKey, NBServeError

#: HTTP statuses of nbserve's errors, as the gRPC status codes that mean the same.
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    507: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def status_code(error: NBServeError) -> grpc.StatusCode:
    if isinstance(error, InvalidKey):  # 400 over HTTP, as TorchServe answers it
        return grpc.StatusCode.UNAUTHENTICATED
    return STATUS_CODES.get(error.status, grpc.StatusCode.INTERNAL if error.status >= 500
                            else grpc.StatusCode.INVALID_ARGUMENT)


def json_message(value) -> str:
    """A management answer as the REST API writes its JSON body."""
    return json.dumps(value, indent=2)


class Service:
    """A gRPC service over the management core and its engine: subclasses name the service
    (``NAME``) and the key it asks for (``KEY``), and define a method per RPC."""

    NAME = ""
    KEY = ""

    def __init__(self, management: Management, tokens: TokenAuthorization | None):
        self.management = management
        self.engine = management.engine
        self.tokens = tokens

    def handler(self) -> grpc.GenericRpcHandler:
        descriptor = messages.service(self.NAME)
        handlers = {}
        for method in descriptor.methods:
            request = messages.message(method.input_type.full_name)
            response = messages.message(method.output_type.full_name)
            kind = {(False, False): grpc.unary_unary_rpc_method_handler,
                    (False, True): grpc.unary_stream_rpc_method_handler,
                    (True, True): grpc.stream_stream_rpc_method_handler,
                    }[method.client_streaming, method.server_streaming]
            handlers[method.name] = kind(self._checked(getattr(self, method.name), method),
                                         request_deserializer=request.FromString,
                                         response_serializer=response.SerializeToString)
        return grpc.method_handlers_generic_handler(descriptor.full_name, handlers)

    def _checked(self, method, descriptor):
        """``method`` after the key check, its NBServeError as the call's status."""
        def fail(context, error: NBServeError):
            context.abort(status_code(error), str(error))

        if descriptor.server_streaming:
            @functools.wraps(method)
            def streaming(request, context):
                try:
                    self._authorize(context)
                    yield from method(request, context)
                except NBServeError as error:
                    fail(context, error)
            return streaming

        @functools.wraps(method)
        def unary(request, context):
            try:
                self._authorize(context)
                return method(request, context)
            except NBServeError as error:
                fail(context, error)
        return unary

    def _authorize(self, context) -> None:
        metadata = dict(context.invocation_metadata())
        check_token(self.tokens, self.KEY, metadata.get("authorization"))
