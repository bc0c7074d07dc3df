"""Streaming answers (send_intermediate_predict_response): each part reaches the client as it is
sent, over HTTP as chunks and from Python through Engine.stream, as TorchServe sends them."""

import time

import pytest

from tests.support import archives
from tests.support.archives import STREAMING_PARTS as PARTS
from tests.support.helpers import timed_chunks


@pytest.mark.parametrize("module, isolation", [("ts.protocol.otf_message_handler", "thread"),
                                               ("ts.handler_utils.utils", "process")])
def test_parts_go_out_as_they_are_sent_and_as_torchserve_sends_them(server_factory, torchserve,
                                                                     tmp_path, module, isolation):
    engine, server, clients = server_factory()
    mar = archives.streaming(tmp_path, module)
    engine.register(mar, isolation=isolation)
    status, pieces = timed_chunks(f"{server.urls['inference']}/predictions/streaming",
                                  {"Authorization": f"Bearer {server.tokens.keys['inference']}"})
    assert status == 200
    assert b"".join(chunk for _, chunk in pieces).decode() == "".join(PARTS)
    assert pieces[0][0] < 0.5 and pieces[0][1] == b"part 0; "  # long before the handler returns
    assert pieces[-1][0] > 0.7
    name = torchserve.register(mar)
    their_status, theirs = timed_chunks(torchserve.url("inference", f"predictions/{name}"))
    assert their_status == 200
    assert b"".join(c for _, c in theirs) == b"".join(c for _, c in pieces)


def test_engine_stream_yields_each_part_then_the_answer(tmp_path):
    from nbserve.serving.engine import Engine

    with Engine() as engine:
        engine.register(archives.streaming(tmp_path))
        started, seen = time.monotonic(), []
        for part in engine.stream("streaming", b"go"):
            seen.append((time.monotonic() - started, part))
        assert [part for _, part in seen] == PARTS
        assert seen[0][0] < 0.5 < seen[-1][0]
        assert engine.predict("streaming", b"go") == "done"  # parts dropped without a listener
