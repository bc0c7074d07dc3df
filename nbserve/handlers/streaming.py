"""Streaming answers: TorchServe's ``ts.protocol.otf_message_handler``, as handlers call it.

A handler sends parts of its answers before it returns::

    from ts.protocol.otf_message_handler import send_intermediate_predict_response

    def handle(data, context):
        for token in generate(...):
            send_intermediate_predict_response(
                [token] * len(data), context.request_ids, "Intermediate Prediction success",
                200, context)
        return ["<end>"] * len(data)

``ret`` holds one value per request of the batch, by index; ``req_id_map`` maps those indices to
request ids (``context.request_ids``). Each part reaches its caller at once: over HTTP as one
chunk of a chunked answer, from Python as an item of :meth:`nbserve.Engine.stream`. What
``handle`` returns is the last part.
"""

from __future__ import annotations


def send_intermediate_predict_response(ret, req_id_map, message, code, context=None):
    """Send ``ret[i]`` to the request ``req_id_map[i]`` now, as one part of its answer."""
    if context is None or context.send_part is None:
        raise RuntimeError("send_intermediate_predict_response needs the handler's context.")
    if code != 200:
        raise RuntimeError(f"An intermediate answer with status {code} ({message}): a streamed "
                           "answer's status is set before its first part; raise to fail it.")
    for index, request_id in req_id_map.items():
        context.send_part(request_id, ret[index])
