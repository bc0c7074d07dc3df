"""TorchServe's gRPC messages, built at import from the descriptors of nbserve's own .proto
files (``proto/``), so that no generated code ties nbserve to one protobuf release.

``proto/torchserve.binpb`` was made from those files with::

    python -m grpc_tools.protoc -Iproto -I$(python -c "import site; print(site.getsitepackages()[0])") \\
        --include_imports --descriptor_set_out=proto/torchserve.binpb \\
        proto/inference.proto proto/management.proto
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool

try:
    from google.protobuf.message_factory import GetMessageClass
except ImportError:  # protobuf < 4.22
    from google.protobuf.message_factory import MessageFactory

    def GetMessageClass(descriptor):  # noqa: N802 - protobuf's name
        return MessageFactory(descriptor.file.pool).GetPrototype(descriptor)

INFERENCE = "org.pytorch.serve.grpc.inference"
MANAGEMENT = "org.pytorch.serve.grpc.management"

_pool = descriptor_pool.DescriptorPool()
for _file in descriptor_pb2.FileDescriptorSet.FromString(
        (Path(__file__).parent / "proto" / "torchserve.binpb").read_bytes()).file:
    _pool.Add(_file)


def message(full_name: str):
    """The message class of ``full_name`` (``org.pytorch.serve.grpc.inference.PredictionsRequest``)."""
    return GetMessageClass(_pool.FindMessageTypeByName(full_name))


def service(full_name: str):
    """The service descriptor of ``full_name``: its methods and their message types."""
    return _pool.FindServiceByName(full_name)


Empty = message("google.protobuf.Empty")
Status = message("google.rpc.Status")
PredictionsRequest = message(f"{INFERENCE}.PredictionsRequest")
PredictionResponse = message(f"{INFERENCE}.PredictionResponse")
TorchServeHealthResponse = message(f"{INFERENCE}.TorchServeHealthResponse")
ManagementResponse = message(f"{MANAGEMENT}.ManagementResponse")
