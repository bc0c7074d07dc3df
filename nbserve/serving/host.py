"""What a worker needs of the model version it serves, and no more.

The engine's :class:`~nbserve.serving.model_version.ModelVersion` provides it, and so does a
worker process's own host (:mod:`nbserve.serving.process.child`), which answers over the socket
to the server instead: the same :class:`~nbserve.serving.worker.Worker` runs in both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from nbserve.errors import NBServeError
from nbserve.handlers.metrics import HandlerMetrics
from nbserve.serving.batch_policy import BatchPolicy
from nbserve.serving.model_config import ModelConfig
from nbserve.serving.queue import Prediction, Request, RequestQueue
from nbserve.serving.stats import VersionStats
from nbserve.store.archive import ModelArchive


def version_label(name: str, version: str) -> str:
    """How messages name a model version: ``Model 'densenet161' version 1.0``."""
    return f"Model {name!r} version {version}"


class BatchRecorder(Protocol):
    def record_batch(self, size: int) -> None: ...


class WorkerHost(Protocol):
    """A model version, as its workers see it."""

    name: str
    version: str
    #: "Model 'x' version 1.0", for messages.
    label: str
    #: The handler the archive (or the registration) names.
    handler: Any
    archive: ModelArchive
    config: ModelConfig
    #: How long batches wait to fill, and how large they aim to be.
    batching: BatchPolicy
    queue: RequestQueue
    stats: BatchRecorder
    handler_metrics: HandlerMetrics

    def answer(self, request: Request, prediction: Prediction) -> None: ...

    def fail(self, request: Request, error: NBServeError) -> None: ...


class ServerHost(WorkerHost, Protocol):
    """A model version in the server, as a worker process's supervisor sees it: also where its
    requirements were installed, and the figures it keeps (restarts among them)."""

    requirements: Path | None
    stats: VersionStats
