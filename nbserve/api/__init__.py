"""TorchServe's APIs over the engine: the route table, the request and answer formats, keys and
access checks, the management core, and the REST (http/) and gRPC (grpc/) servers."""
