"""TorchServe's gRPC APIs beside the REST ones: inference on 7070, management on 7071.

Off unless asked (``enable_grpc=true`` in config.properties, or ``--grpc``), on loopback like
the REST APIs, with the same engine, keys (``authorization: Bearer <key>`` in the call's
metadata), ``max_request_size``/``max_response_size`` and, with ``enable_grpc_ssl=true``, the
same PEM files as HTTPS. Needs ``pip install 'nbserve[grpc]'``.

Errors carry the gRPC status that says what happened (an unknown model is ``NOT_FOUND``, where
TorchServe answers ``INTERNAL``), with the REST API's message.
"""

from __future__ import annotations

import errno
import json
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import grpc

from nbserve.errors import BadRequest, InvalidKey, NBServeError

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


def addresses(config) -> dict[str, str]:
    """``host:port`` of the gRPC inference and management APIs, as config.properties says
    (TorchServe's ``grpc_*_address`` or ``grpc_*_port``, loopback by default)."""
    found = {}
    for api, port in (("inference", 7070), ("management", 7071)):
        address = config.values.get(f"grpc_{api}_address")
        port = config.values.get(f"grpc_{api}_port") or port
        if address:
            parts = urlsplit(address if "//" in address else f"//{address}")
            found[api] = f"{parts.hostname}:{parts.port if parts.port is not None else port}"
        else:
            found[api] = f"127.0.0.1:{port}"
    return found


class GrpcServer:
    """The two gRPC services over an HTTP :class:`~nbserve.http.Server`'s engine, keys and
    model store."""

    def __init__(self, http_server):
        from nbserve.grpc.inference import InferenceService
        from nbserve.grpc.management import ManagementService

        self.http = http_server
        config = http_server.config
        # gRPC's SO_REUSEPORT would let a second server bind the same port and take half the
        # calls made with the first one's keys; without it, a taken port fails as REST's do.
        options = [("grpc.max_receive_message_length", config.max_request_size),
                   ("grpc.max_send_message_length", config.max_response_size),
                   ("grpc.so_reuseport", 0)]
        self.servers = {}
        self.urls: dict[str, str] = {}
        for api, service in (("inference", InferenceService), ("management", ManagementService)):
            age = config.values.get(f"grpc_{api}_max_connection_age_ms")
            extra = [("grpc.max_connection_age_ms", int(age))] if age else []
            server = grpc.server(ThreadPoolExecutor(max_workers=16, thread_name_prefix=f"nbserve-grpc-{api}"),
                                 options=options + extra)
            server.add_generic_rpc_handlers((service(http_server).handler(),))
            self.servers[api] = server

    def start(self) -> GrpcServer:
        config = self.http.config
        credentials = _credentials(config) if config.values.get("enable_grpc_ssl") else None
        for api, address in addresses(config).items():
            server = self.servers[api]
            try:
                port = (server.add_secure_port(address, credentials) if credentials
                        else server.add_insecure_port(address))
            except RuntimeError:  # grpcio's "Failed to bind to address"
                port = 0
            if port == 0:
                raise OSError(errno.EADDRINUSE, f"The gRPC {api} address {address} is in use; "
                              f"choose another with grpc_{api}_port (or grpc_{api}_address) in "
                              "config.properties, or set enable_grpc=false.")
            host = address.rsplit(":", 1)[0]
            self.urls[api] = f"{host}:{port}"
            server.start()
        return self

    def stop(self, grace: float = 5) -> None:
        for server in self.servers.values():
            server.stop(grace).wait()


def _credentials(config):
    if not (config.certificate_file and config.private_key_file):
        raise BadRequest("enable_grpc_ssl=true needs certificate_file and private_key_file (PEM).")
    with open(config.private_key_file, "rb") as key, open(config.certificate_file, "rb") as cert:
        return grpc.ssl_server_credentials([(key.read(), cert.read())])


def json_message(value) -> str:
    """A management answer as the REST API writes its JSON body."""
    return json.dumps(value, indent=2)
