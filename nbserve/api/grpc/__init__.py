"""TorchServe's gRPC APIs beside the REST ones: inference on 7070, management on 7071.

On in ``nbserve serve`` where grpcio is installed, as TorchServe always serves them (a taken
port is a warning unless asked for; ``enable_grpc=false`` or ``--no-grpc`` turns them off), off
in a kernel unless asked; on loopback like the REST APIs, with the same engine, keys (``authorization: Bearer <key>`` in the call's
metadata), ``max_request_size``/``max_response_size`` and, with ``enable_grpc_ssl=true``, the
same PEM files as HTTPS. Needs ``pip install 'nbserve[grpc]'``.

The server (:mod:`.server`) runs two services (:mod:`.inference`, :mod:`.management`) over the
same management core as REST (:mod:`nbserve.api.management`). Errors carry the gRPC status that says what happened (an unknown model is ``NOT_FOUND``, where
TorchServe answers ``INTERNAL``), with the REST API's message.
"""
