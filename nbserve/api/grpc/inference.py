"""TorchServe's gRPC inference service: Ping, Predictions, StreamPredictions (the parts a
streaming handler sends), and StreamPredictions2 (a stateful model's sequence, each answer in
turn, a failed one as a status in its answer: nbserve.serving.sequences)."""

from __future__ import annotations

import uuid

import grpc

from nbserve.api.grpc import messages
from nbserve.api.grpc.service import Service, json_message, status_code
from nbserve.errors import NBServeError
from nbserve.serving.answers import encode_answer


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
        """A sequence's requests, each answered in turn. A stream's first request names its
        sequence, or starts one with ``ts_request_sequence_start: true`` in its input; the
        stream's later requests may leave the id out, and each answer names it (TorchServe
        asks for the id every time and answers without it)."""
        from nbserve.serving.queue import streamed
        from nbserve.serving.sequences import SEQUENCE_END, SEQUENCE_ID, SEQUENCE_START

        sequence_id = ""
        for request in requests:
            inputs = dict(request.input)
            sequence_id = request.sequence_id or sequence_id
            if not sequence_id and inputs.get(SEQUENCE_START, b"").lower() != b"true":
                yield _failed(grpc.StatusCode.INTERNAL, "Parameter sequenceId is required.")
                continue
            headers = {SEQUENCE_ID: sequence_id}
            if not sequence_id:
                headers = {SEQUENCE_ID: f"ts-seq-{uuid.uuid4()}", SEQUENCE_START: "true"}
            if inputs.get(SEQUENCE_END, b"").lower() == b"true":
                headers[SEQUENCE_END] = "true"
            try:
                for part in streamed(lambda on_part: self.engine.submit(
                        request.model_name, inputs, version=request.model_version or None,
                        headers=headers, on_part=on_part)):
                    yield messages.PredictionResponse(prediction=encode_answer(part)[0],
                                                      sequence_id=headers[SEQUENCE_ID])
            except NBServeError as error:
                yield _failed(status_code(error), str(error))
            sequence_id = headers[SEQUENCE_ID]


def _failed(code: grpc.StatusCode, message: str):
    """An answer of StreamPredictions2 that failed: the stream goes on, as in TorchServe."""
    return messages.PredictionResponse(status=messages.Status(code=code.value[0], message=message))
