"""A Ray Serve deployment whose replicas each run nbserve's engine for one model.

Inside a replica the request's path is the one it takes in a kernel: the engine's queue, its
batcher, the handler. Ray gives each replica its devices (``CUDA_VISIBLE_DEVICES`` for
``num_gpus``), and the engine's defaults follow what the replica sees.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import ray
from ray import serve
from ray.exceptions import RayActorError, RayTaskError

from nbserve.api.management import describe
from nbserve.errors import NBServeError, RequestTimeout
from nbserve.serving.engine import Engine
from nbserve.serving.queue import Prediction

#: Pause before sending a request again after its replica died.
RETRY_PAUSE = 0.2


@serve.deployment
class ModelReplica:
    """One replica: the archive written to this node and an engine serving it.

    The archive comes as its bytes or an ObjectRef to them, so a replica placed on any node of
    the cluster, or started again after a failure, can load it.
    """

    def __init__(self, archive: ray.ObjectRef | bytes, filename: str, model_name: str,
                 settings: dict):
        self._folder = Path(tempfile.mkdtemp(prefix="nbserve-replica-"))
        path = self._folder / filename
        path.write_bytes(archive if isinstance(archive, bytes) else ray.get(archive))
        self.engine = Engine()
        self.version = self.engine.register(path, model_name=model_name, **settings)

    async def predict(self, inputs: dict, headers: dict | None = None,
                      version: str | None = None) -> Prediction:
        future = self.engine.submit(self.version.name, inputs, version=version, headers=headers)
        return await asyncio.wrap_future(future)

    async def stream(self, inputs: dict, headers: dict | None = None,
                     version: str | None = None):
        """The parts a streaming handler sends, as it sends them, then the Prediction: a
        generator, which Ray Serve streams to the caller item by item."""
        loop = asyncio.get_running_loop()
        parts: asyncio.Queue = asyncio.Queue()
        answer = asyncio.wrap_future(self.engine.submit(
            self.version.name, inputs, version=version, headers=headers,
            on_part=lambda value: loop.call_soon_threadsafe(parts.put_nowait, value)))
        while True:
            part = asyncio.ensure_future(parts.get())
            await asyncio.wait({part, answer}, return_when=asyncio.FIRST_COMPLETED)
            if part.done():
                yield part.result()
                continue
            part.cancel()
            while not parts.empty():
                yield parts.get_nowait()
            yield await answer
            return

    def describe(self) -> dict:
        """TorchServe's describe-model JSON for this replica's engine."""
        return describe(self.version)

    def check_health(self) -> None:
        """Called by Ray Serve; a replica without a ready worker is replaced."""
        if not any(worker.status == "READY" for worker in self.version.workers):
            raise RuntimeError(f"{self.version.label} has no ready worker.")

    def __del__(self):
        self.engine.close()
        shutil.rmtree(self._folder, ignore_errors=True)


async def stream_replica(handle, *args, timeout: float):
    """A model replica's ``stream``: its first item, and the rest to iterate; retried as
    :func:`call_replica` retries until the first item comes."""
    async def first():
        items = handle.options(stream=True).stream.remote(*args)
        return await items.__anext__(), items

    return await _retried(first, timeout)


async def call_replica(handle, method: str, *args, timeout: float):
    """Call a model's replicas; a call that meets a dying replica is sent again, to the
    replicas Ray still has, until ``timeout`` seconds have passed (answers are idempotent).

    An error raised by nbserve in the replica (a bad input, an unknown version, a handler's
    failure) is raised here as itself.
    """
    return await _retried(lambda: getattr(handle, method).remote(*args), timeout)


async def _retried(attempt, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await attempt()
        except RayActorError:
            if time.monotonic() + RETRY_PAUSE > deadline:
                raise RequestTimeout(f"No replica answered within {timeout:g} s.") from None
            await asyncio.sleep(RETRY_PAUSE)
        except RayTaskError as e:
            if isinstance(e.cause, NBServeError):
                raise e.cause from None
            raise
