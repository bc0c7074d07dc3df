"""The gRPC server: TorchServe's two services on their own ports, with REST's limits and PEM files."""

from __future__ import annotations

import errno
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import grpc

from nbserve.api.grpc.inference import InferenceService
from nbserve.api.grpc.management import ManagementService
from nbserve.api.management import Management
from nbserve.api.tokens import TokenAuthorization
from nbserve.errors import BadRequest


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
    """The two gRPC services over the REST APIs' management core (its engine, config and model
    store) and keys (None: token authorization is off)."""

    def __init__(self, management: Management, tokens: TokenAuthorization | None):
        self.config = config = management.config
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
            server.add_generic_rpc_handlers((service(management, tokens).handler(),))
            self.servers[api] = server

    def start(self) -> GrpcServer:
        config = self.config
        credentials = _credentials(config) if config.values.get("enable_grpc_ssl") else None
        for api, address in addresses(config).items():
            server = self.servers[api]
            try:
                port = (server.add_secure_port(address, credentials) if credentials
                        else server.add_insecure_port(address))
            except RuntimeError:  # grpcio's "Failed to bind to address"
                port = 0
            if port == 0:
                self.stop(grace=0)
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
