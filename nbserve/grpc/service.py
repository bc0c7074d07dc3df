"""What both gRPC services share: methods found by name from the service's descriptor, the
caller's key checked, and nbserve's errors ended with the gRPC status that says the same."""

from __future__ import annotations

import functools

import grpc

from nbserve.errors import NBServeError
from nbserve.grpc import messages, status_code
from nbserve.http.access import check_token


class Service:
    """A gRPC service over an HTTP server's engine: subclasses name the service (``NAME``) and
    the key it asks for (``KEY``), and define a method per RPC."""

    NAME = ""
    KEY = ""

    def __init__(self, http_server):
        self.http = http_server
        self.engine = http_server.engine

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
        check_token(self.http.tokens, self.KEY, metadata.get("authorization"))
