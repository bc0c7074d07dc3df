"""TorchServe's gRPC inference service: Ping, Predictions, StreamPredictions (the parts a
streaming handler sends), and StreamPredictions2, refused: it serves sequences of a stateful
model on one worker, and nbserve has no sequence batching."""

from __future__ import annotations

from nbserve.api.grpc import messages
from nbserve.api.grpc.service import Service, json_message
from nbserve.errors import NBServeError
from nbserve.serving.answers import encode_answer


class SequenceBatchingUnsupported(NBServeError):
    status = 501
    type = "ServiceUnavailableException"


class InferenceService(Service):
    NAME = f"{messages.INFERENCE}.InferenceAPIsService"
    KEY = "inference"

    def Ping(self, request, context):  # noqa: N802 - TorchServe's RPC names
        return messages.TorchServeHealthResponse(health=json_message({"status": "Healthy"}))

    def Predictions(self, request, context):  # noqa: N802
        future = self.engine.submit(request.model_name, dict(request.input),
                                    version=request.model_version or None)
        return messages.PredictionResponse(prediction=encode_answer(future.result().value)[0])

    def StreamPredictions(self, request, context):  # noqa: N802
        from nbserve.serving.queue import streamed

        parts = streamed(lambda on_part: self.engine.submit(
            request.model_name, dict(request.input), version=request.model_version or None,
            on_part=on_part))
        for part in parts:
            yield messages.PredictionResponse(prediction=encode_answer(part)[0])

    def StreamPredictions2(self, requests, context):  # noqa: N802
        raise SequenceBatchingUnsupported(
            "StreamPredictions2 serves the sequences of a stateful model (sequence batching), "
            "which nbserve does not support; use Predictions, or StreamPredictions for a "
            "streaming handler.")
        yield  # a generator, as the RPC streams
