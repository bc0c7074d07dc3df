"""The serving engine: models and their versions (:mod:`.model_version`), each with a queue and
workers.

The APIs (:mod:`nbserve.api`), the magics and the CLI drive one :class:`Engine` per process; the
jupyter-server extension forwards to the kernels' engines. A request's path:
:meth:`Engine.submit` finds the model version and puts a :class:`~nbserve.serving.queue.Request`
on its queue; a worker (:mod:`.worker`, or :mod:`.process` in a process of its own) takes it in
a batch, runs the handler, and settles the request's future with the answer or the error.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import sys
import threading
import time
import traceback
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from nbserve.errors import (
    BadRequest,
    ModelAlreadyRegistered,
    ModelLoadFailed,
    ModelNotFound,
    ModelVersionNotFound,
)
from nbserve.handlers import text_generation
from nbserve.handlers.util import get_yaml_config
from nbserve.logs import MODEL_LOG
from nbserve.serving import model_config
from nbserve.serving.model_version import ModelVersion
from nbserve.serving.process.supervisor import BACKOFF
from nbserve.serving.queue import DeadlineWatcher, Prediction, Request, Stage, streamed
from nbserve.store import requirements
from nbserve.store.archive import ModelArchive, check_model_name, check_model_version, open_archive
from nbserve.store.live import LiveModel

logger = logging.getLogger(__name__)


@dataclass
class Model:
    """A model name and its versions, one of which is the default."""

    name: str
    versions: dict[str, ModelVersion]
    default_version: str

    @property
    def default(self) -> ModelVersion:
        return self.versions[self.default_version]


@dataclass(frozen=True)
class LoadFailure:
    """A model that was asked for and could not be loaded: from where, and why."""

    name: str
    source: str
    error: str
    traceback: str


class Engine:
    """Serves models in this process.

    >>> engine = Engine()
    >>> engine.register("model-store/densenet161.mar")          # doctest: +SKIP
    >>> engine.predict("densenet161", open("cat.jpg", "rb").read())   # doctest: +SKIP
    {'tabby': 0.45, 'tiger_cat': 0.26, ...}
    """

    def __init__(self, defaults: model_config.ModelConfig | None = None):
        #: The settings a model gets where neither its model-config.yaml nor its registration says.
        self.defaults = defaults or model_config.machine_defaults()
        #: TorchServe's metrics.yaml, whose ``model_metrics`` every model's handler may use.
        self.metrics_config: str | None = None
        #: Whether metrics a handler adds are exported though metrics.yaml does not declare
        #: them (TorchServe's ``model_metrics_auto_detect``).
        self.metrics_auto_detect = False
        #: Whether an archive's requirements.txt is installed before it loads (TorchServe's
        #: ``install_py_dep_per_model``).
        self.install_py_dep_per_model = False
        self._models: dict[str, Model] = {}
        #: Models that failed to load (:meth:`record_failure`), until one of that name loads.
        self.failures: dict[str, LoadFailure] = {}
        self._lock = threading.RLock()
        self._deadlines = DeadlineWatcher()
        #: Called after each change to what is served (register, scale, set_default,
        #: unregister): how snapshots (nbserve.api.snapshot) follow it.
        self.on_change: list[Callable[[], None]] = []
        self._closed = threading.Event()

    # Registration.

    def register(
        self,
        source: str | os.PathLike | ModelArchive,
        *,
        model_name: str | None = None,
        version: str | None = None,
        handler: str | None = None,
        batch_size: int | None = None,
        max_batch_delay: float | None = None,
        initial_workers: int | None = None,
        max_workers: int | None = None,
        response_timeout: float | None = None,
        job_queue_size: int | None = None,
        isolation: str | None = None,
        preprocess_threads: int | None = None,
        replace: bool = False,
        wait: bool = True,
    ) -> ModelVersion:
        """Load an archive (``.mar``, ``.tar.gz`` or folder) and start its workers.

        Name and version come from the manifest unless given. Settings come from the arguments,
        then the archive's model-config.yaml, then :attr:`defaults`. ``isolation`` is where
        its workers run: ``"process"`` (one each) or ``"thread"``; ``preprocess_threads``
        how many threads preprocess each worker's requests. The first version of a
        model becomes its default. With ``replace``, a version already served is swapped for the
        new one once it has loaded; requests already queued for the old one are still answered.
        Without ``wait`` (TorchServe's ``synchronous=false``), a new version is served at once
        and its workers start behind it: requests wait in its queue until one is ready, and if
        none can start it is removed again and recorded in :attr:`failures`.
        """
        archive = source if isinstance(source, ModelArchive) else open_archive(source)
        name = model_name or archive.model_name
        version = str(version or archive.version or "1.0")
        check_model_name(name, BadRequest)
        check_model_version(version, BadRequest)
        config_file = archive.file("configFile")
        model_yaml = get_yaml_config(config_file) if config_file and config_file.is_file() else {}
        if text_generation.serves_text_generation(handler or archive.handler):
            model_yaml = text_generation.model_yaml_defaults(model_yaml)
        config = model_config.resolve(
            self.defaults, model_yaml, batch_size=batch_size, max_batch_delay=max_batch_delay,
            min_workers=initial_workers, max_workers=max_workers, response_timeout=response_timeout,
            job_queue_size=job_queue_size, isolation=isolation,
            preprocess_threads=preprocess_threads,
        )
        notices = []
        if isinstance(archive, LiveModel) and config.isolation == "process":
            config = dataclasses.replace(config, isolation="thread")
            notices.append(f"{name} runs on threads: a live object's module and handler live in "
                           "this kernel, where another process cannot import them; %archive it "
                           "to serve it in worker processes.")
        with self._lock:
            existing = self._models.get(name)
            if existing and version in existing.versions and not replace:
                raise ModelAlreadyRegistered(
                    f"Model version {version} is already registered for model {name!r}; "
                    "pass replace=True to swap it.")
        loaded = ModelVersion(archive, name, version, handler or archive.handler, config,
                              self.metrics_config, self.metrics_auto_detect)
        loaded.notices = notices
        loaded.requirements = self._requirements(archive, name)
        if loaded.requirements is not None and config.isolation == "thread":
            requirements.use(loaded.requirements, first=False)
        if not wait and not replace:
            self._add(loaded)
            threading.Thread(target=self._start_workers, args=(loaded, source),
                             name=f"nbserve-load-{name}", daemon=True).start()
            self._changed()
            return loaded
        try:
            loaded.scale(config.min_workers)
        except BaseException:
            loaded.scale(0)
            raise
        old = self._add(loaded, swap=True)
        if old is not None:
            threading.Thread(target=old.join, name=f"nbserve-drain-{name}", daemon=True).start()
        self._changed()
        return loaded

    def _add(self, loaded: ModelVersion, swap: bool = False) -> ModelVersion | None:
        """Serve ``loaded`` (its workers may still be starting); the version it replaces,
        closed, where ``swap`` allows one, else ModelAlreadyRegistered."""
        with self._lock:
            model = self._models.get(loaded.name)
            old = model.versions.get(loaded.version) if model else None
            if old is not None and not swap:
                raise ModelAlreadyRegistered(
                    f"Model version {loaded.version} is already registered for model "
                    f"{loaded.name!r}.")
            if model is None:
                self._models[loaded.name] = Model(loaded.name, {loaded.version: loaded},
                                                  loaded.version)
            else:
                model.versions[loaded.version] = loaded
            self.failures.pop(loaded.name, None)
            if old is not None:
                old.close(wait=False)  # under the lock: no request can reach it after this
        return old

    def _start_workers(self, loaded: ModelVersion, source) -> None:
        """A version served before its workers started: start them, trying again after
        TorchServe's backoff while they fail, each failure's traceback logged, for up to
        ``maxRetryTimeoutInSec``; then stop serving it (answering what waited with why) and
        record the failure."""
        give_up = time.monotonic() + loaded.config.max_retry_timeout
        for attempt in itertools.count():
            try:
                loaded.scale(loaded.config.min_workers)
                break
            except Exception as error:  # noqa: BLE001 - logged, retried, then recorded
                loaded.scale(0)
                MODEL_LOG.error("%s", error)
                # The traceback, then what failed: TorchServe's order, which its log readers
                # (and its test suite) follow to the exception's last line.
                summary, _, details = str(error).partition("\n")
                sys.stderr.write(f"{(details or summary).rstrip()}\n[{loaded.label}] failed "
                                 f"to start (attempt {attempt + 1})\n")
                wait = BACKOFF[min(attempt + 1, len(BACKOFF) - 1)]
                if time.monotonic() + wait < give_up and not loaded.queue.closed \
                        and not self._closed.wait(wait) and not loaded.queue.closed:
                    continue
                with self._lock:
                    model = self._models.get(loaded.name)
                    if model is not None and model.versions.get(loaded.version) is loaded:
                        self._remove(model, loaded.version)
                failure = self.record_failure(loaded.name, getattr(source, "source", source),
                                              error)
                loaded.queue.fail_all(ModelLoadFailed(f"{loaded.label} failed to start: "
                                                      f"{failure.error}"))
                break
        self._changed()

    def _requirements(self, archive: ModelArchive, name: str) -> Path | None:
        """Install the archive's requirements where the setting asks; where they went."""
        file = archive.file("requirementsFile")
        if file is None or not file.is_file():
            return None
        if not self.install_py_dep_per_model:
            logger.warning("%s comes with %s, which is not installed: set "
                           "install_py_dep_per_model=true to install it per model.", name, file.name)
            return None
        return requirements.install(file, name)

    def record_failure(self, name: str, source: str | os.PathLike, error: BaseException) -> LoadFailure:
        """Keep why ``name`` did not load, so asking for it says so rather than "not found"."""
        failure = LoadFailure(name, str(source), f"{type(error).__name__}: {error}",
                              "".join(traceback.format_exception(error)))
        with self._lock:
            self.failures[name] = failure
        return failure

    def unregister(self, model_name: str, version: str | None = None, wait: bool = True) -> None:
        """Stop serving a version (the default one if none given) after answering its queue."""
        with self._lock:
            target = self.get(model_name, version)
            self._remove(self._models[model_name], target.version)
            target.close(wait=False)
        self._changed()
        if wait:
            target.join()

    def _remove(self, model: Model, version: str) -> None:
        """Stop listing a version (the lock held): the model goes with its last version, and
        the newest one left becomes the default if this was it."""
        del model.versions[version]
        if not model.versions:
            del self._models[model.name]
        elif model.default_version == version:
            model.default_version = sorted(model.versions)[-1]

    def scale(self, model_name: str, version: str | None = None, *, min_workers: int | None = None,
              max_workers: int | None = None, wait: bool = True) -> ModelVersion:
        """Run ``min_workers`` workers for a version (TorchServe's scale-workers call)."""
        target = self.get(model_name, version)
        new = model_config.resolve(target.config, None, min_workers=min_workers,
                                   max_workers=max_workers)
        target.config = new
        target.scale(new.min_workers, wait=wait)
        self._changed()
        return target

    def set_default(self, model_name: str, version: str) -> None:
        with self._lock:
            model = self.model(model_name)
            if version not in model.versions:
                raise ModelVersionNotFound(
                    f"Model version: {version} does not exist for model: {model_name}")
            model.default_version = version
        self._changed()

    def _changed(self) -> None:
        for listener in list(self.on_change):
            try:
                listener()
            except Exception:  # noqa: BLE001 - a listener's failure is logged, not the caller's
                logger.exception("A listener of the engine's changes failed")

    # Lookup.

    def models(self) -> list[Model]:
        with self._lock:
            return sorted(self._models.values(), key=lambda m: m.name)

    def get(self, model_name: str, version: str | None = None) -> ModelVersion:
        """A served version, the default one if ``version`` is None; ModelNotFound if none."""
        with self._lock:
            model = self.model(model_name)
            if version is None:
                return model.default
            if version not in model.versions:
                raise ModelVersionNotFound(
                    f"Model version: {version} does not exist for model: {model_name} "
                    f"(it has {', '.join(sorted(model.versions))})")
            return model.versions[version]

    def model(self, model_name: str) -> Model:
        """A served model and its versions; ModelNotFound if none."""
        model = self._models.get(model_name)
        if model is None:
            failure = self.failures.get(model_name)
            if failure is not None:
                raise ModelLoadFailed(f"Model {model_name} ({failure.source}) failed to load: "
                                      f"{failure.error}\n{failure.traceback}")
            raise ModelNotFound(f"Model not found: {model_name} (served: "
                                f"{', '.join(sorted(self._models)) or 'none'})")
        return model

    # Inference.

    def submit(self, model_name: str, inputs: dict, *, version: str | None = None,
               headers: dict | None = None, timeout: float | None = None,
               on_part: Callable[[Any], None] | None = None,
               stages: list[Stage] | None = None) -> Future:
        """Queue one request; the future resolves to a :class:`~nbserve.serving.queue.Prediction`.

        ``inputs`` is what the handler sees for this request (``{"body": ...}``, or one key per
        form field). ``timeout`` (seconds) defaults to the version's ``response_timeout``.
        ``on_part`` gets each part of the answer a streaming handler sends before it returns.
        ``stages`` gets each step the worker takes with it, for a trace. A caller that gives
        up fails the future with ClientClosedRequest: if it still waits, it is dropped unrun.
        Raises ModelNotFound, or QueueFull when the version's queue is full.
        """
        request = Request(inputs=inputs, headers=dict(headers or {}), on_part=on_part,
                          stages=[] if stages is None else stages)
        with self._lock:
            target = self.get(model_name, version)
            wait = target.config.response_timeout if timeout is None else timeout
            request.deadline = request.received + wait
            target.admit(request)
        self._deadlines.watch(request, target.label)
        return request.future

    def predict(self, model_name: str, data: Any, *, version: str | None = None,
                headers: dict | None = None, timeout: float | None = None) -> Any:
        """Run one input through a model and return its answer, as the HTTP API would send it.

        ``data`` is the request body: bytes (an image), text, or a JSON-like value.
        Raises :class:`~nbserve.errors.InferenceError` with the handler's traceback on failure.
        """
        future = self.submit(model_name, {"body": data}, version=version, headers=headers,
                             timeout=timeout)
        prediction: Prediction = future.result()
        return prediction.value

    def stream(self, model_name: str, data: Any, *, version: str | None = None,
               headers: dict | None = None, timeout: float | None = None) -> Iterator[Any]:
        """Run one input through a model, yielding each part of its answer as the handler sends
        it (``send_intermediate_predict_response``), the returned answer last."""
        return streamed(lambda on_part: self.submit(model_name, {"body": data}, version=version,
                                                    headers=headers, timeout=timeout,
                                                    on_part=on_part))

    def close(self) -> None:
        """Unload every model, answering what is queued first."""
        self._closed.set()
        for model in self.models():
            for version in list(model.versions):
                self.unregister(model.name, version)
        self._deadlines.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
