"""The messages between a worker process and its supervisor, named once here (:class:`Kind`): a
kind, a request id, and a payload of plain data, pickled, and read back with nothing but plain
data and nbserve's errors allowed."""

from __future__ import annotations

import io
import pickle
from multiprocessing.connection import Connection


class Kind:
    """Each message's kind, sent as its plain string; what its payload holds."""

    # The server's, after the spec to load (sent with ``conn.send``).
    REQUEST = "request"  #: request id, inputs, headers
    STOP = "stop"  #: (nothing): finish what is in hand, then exit
    CANCEL = "cancel"  #: request id: its client left; drop it, or stop generating for it
    # The process's (send_message: the kind and request id readable whatever the payload).
    READY = "ready"  #: the GPU memory the handler took, or None
    LOAD_FAILED = "load_failed"  #: the error, its traceback
    STARTED = "started"  #: the ids of the requests a batch began
    BATCH = "batch"  #: its size, the batching policy's target and wait
    METRIC = "metric"  #: (sent in METRICS) a handler metric's update
    METRICS = "metrics"  #: [(name, unit, dimensions, type, value, dimension values), ...]
    PART = "part"  #: (sent in PARTS) a part of a streamed answer
    PARTS = "parts"  #: [(request id, part), ...]: the parts that were ready together
    ANSWER = "answer"  #: (a request's) value, status, headers, stages
    ERROR = "error"  #: (a request's) nbserve error, stages


class Unreadable(Exception):
    """A message from a worker process that the server cannot read."""

    def __init__(self, kind: str, request_id: str | None, reason: str):
        super().__init__(reason)
        self.kind, self.request_id, self.reason = kind, request_id, reason


class _PlainData(pickle.Unpickler):
    """Reads plain data, nbserve's errors and encoded answers, and no other class: reading a
    worker's message never imports a handler's module into the server."""

    def find_class(self, module: str, name: str):
        if module == "nbserve.errors" or (module, name) == ("nbserve.api.protocol", "Encoded"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not plain data")


def send_message(conn: Connection, kind: str, request_id: str | None, *payload) -> None:
    """One message to the server: its kind and request id first, readable whatever the
    payload holds, so a payload the server cannot read fails only that request."""
    head = pickle.dumps((kind, request_id))
    conn.send_bytes(len(head).to_bytes(4, "big") + head + pickle.dumps(payload))


def receive_message(conn: Connection) -> tuple[str, str | None, tuple]:
    """``(kind, request_id, payload)`` of the next message; Unreadable if it cannot be read."""
    frame = conn.recv_bytes()
    size = int.from_bytes(frame[:4], "big")
    try:
        kind, request_id = _PlainData(io.BytesIO(frame[4:4 + size])).load()
    except Exception as error:  # noqa: BLE001 - whatever the bytes are
        raise Unreadable("message", None, f"{type(error).__name__}: {error}") from None
    try:
        return kind, request_id, _PlainData(io.BytesIO(frame[4 + size:])).load()
    except Exception as error:  # noqa: BLE001 - whatever the bytes are
        raise Unreadable(kind, request_id, f"{type(error).__name__}: {error}") from None
