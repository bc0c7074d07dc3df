"""Request and answer shapes as TorchServe builds them, apart from any server."""

import base64
import json

import pytest

from nbserve.api.protocol import (
    kserve_v1_inputs,
    kserve_v2_answer,
    kserve_v2_inputs,
    prediction_answer,
    request_inputs,
)
from nbserve.errors import BadRequest, NBServeError
from nbserve.serving.answers import encode_answer
from nbserve.serving.queue import Prediction


def test_bodies_reach_the_handler_as_torchserve_decodes_them():
    assert request_inputs({"Content-Type": "application/json"}, b'{"a": 1}') == {"body": {"a": 1}}
    assert request_inputs({"Content-Type": "text/plain"}, "é".encode()) == {"body": "é"}
    assert request_inputs({}, b"\x89PNG") == {"body": b"\x89PNG"}
    form = b"--b\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\nxyz\r\n--b--\r\n"
    assert request_inputs({"Content-Type": "multipart/form-data; boundary=b"}, form) == {"data": "xyz"}
    # curl --data-binary @cat.jpg: urlencoded, but not a form; the bytes are the body.
    assert request_inputs({"Content-Type": "application/x-www-form-urlencoded"},
                          b"\xff\xd8binary") == {"body": b"\xff\xd8binary"}


def test_answers_go_out_with_a_type_no_browser_runs():
    assert encode_answer({"a": 1}) == (json.dumps({"a": 1}, indent=2).encode(), "application/json")
    assert encode_answer("<b>") == (b"<b>", "text/plain; charset=utf-8")
    assert encode_answer(b"\x00") == (b"\x00", "application/octet-stream")
    status, headers, body = prediction_answer(Prediction("x", 202, {"X-A": "1"}), 100)
    assert (status, headers, body) == (202, {"X-A": "1", "Content-Type": "text/plain; charset=utf-8"}, b"x")
    with pytest.raises(NBServeError, match="max_response_size"):
        prediction_answer(Prediction("x" * 10), 5)


def test_kserve_shapes_and_their_limits():
    assert kserve_v1_inputs(b'{"instances": [1, {"data": "a"}]}', 10) == [{"body": 1}, {"data": "a"}]
    with pytest.raises(BadRequest, match="max_kserve_instances"):
        kserve_v1_inputs(json.dumps({"instances": [0] * 3}).encode(), 2)
    with pytest.raises(BadRequest, match="not JSON"):
        kserve_v1_inputs(b"{", 10)
    image = base64.b64encode(b"\x89PNG").decode()
    request, inputs = kserve_v2_inputs(json.dumps(
        {"id": "r", "inputs": [{"name": "t", "datatype": "BYTES", "data": [image]}]}).encode(), 10)
    assert inputs == [{"data": b"\x89PNG", "body": b"\x89PNG"}]
    answer = kserve_v2_answer(request, "m", "1.0", [Prediction([1, 2])])
    assert answer == {"id": "r", "model_name": "m", "model_version": "1.0", "outputs": [
        {"name": "t", "shape": [2], "datatype": "BYTES", "data": [1, 2]}]}
