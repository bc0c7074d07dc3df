"""Starting an engine and its HTTP server from TorchServe's start settings.

Shared by ``nbserve serve`` and ``%serve``: the model store, ``--models`` (``name=file.mar``,
``file.mar`` or ``all``), and config.properties' ``load_models`` and ``models``.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from nbserve.api.http import Server
from nbserve.config import ServerConfig
from nbserve.errors import BadRequest
from nbserve.serving.engine import Engine
from nbserve.serving.model_config import machine_defaults
from nbserve.serving.model_version import ModelVersion
from nbserve.store.archive import ModelArchive, open_archive

ARCHIVE_SUFFIXES = (".mar", ".tar.gz")


def engine_for(config: ServerConfig, isolation: str = "thread") -> Engine:
    """An engine whose model defaults follow config.properties; workers run as ``isolation``
    says unless config.properties' ``isolation`` does."""
    defaults = replace(machine_defaults(config.number_of_gpu),
                       isolation=config.isolation or isolation,
                       preprocess_threads=config.preprocess_threads,
                       job_queue_size=config.job_queue_size,
                       response_timeout=config.default_response_timeout,
                       startup_timeout=config.default_startup_timeout,
                       limit_max_image_pixels=config.limit_max_image_pixels)
    if config.default_workers_per_model is not None:  # 0: none until scaled, as TorchServe
        workers = config.default_workers_per_model
        defaults = replace(defaults, min_workers=workers, max_workers=workers)
    engine = Engine(defaults)
    engine.metrics_config = config.metrics_config
    engine.metrics_auto_detect = config.model_metrics_auto_detect
    engine.install_py_dep_per_model = config.install_py_dep_per_model
    return engine


def startup_entries(config: ServerConfig, models: list[str]) -> list[str]:
    """What names the models to load at startup: ``--models`` (several in one argument,
    separated by commas, as TorchServe reads it), else ``load_models``, else the archives the
    ``models`` property names (``marName``); from a snapshot, its models alone."""
    if config.restoring:  # a snapshot names what to serve, as TorchServe restores it
        models = []
    entries = [part.strip() for entry in models for part in entry.split(",") if part.strip()]
    if config.load_models and not entries and not config.restoring:
        entries = [e.strip() for e in config.load_models.split(",") if e.strip()]
    if not entries:
        entries = [f"{name}={version['marName']}"
                   for name, versions in config.model_settings().items()
                   for version in versions.values() if isinstance(version, dict)
                   and version.get("marName")]
    return entries


def startup_models(config: ServerConfig, models: list[str]) -> list[tuple[str | None, Path]]:
    """``(name or None, archive path)`` for each model to load at startup."""
    return [load for entry in startup_entries(config, models)
            for load in entry_archives(entry, config.model_store)]


def entry_archives(entry: str, store: str | os.PathLike | None) -> list[tuple[str | None, Path]]:
    """``(name or None, archive path)`` for one startup entry: ``name=file``, ``file``, or
    ``all`` (every archive in the model store)."""
    if entry in ("all", "ALL"):
        if store is None:
            raise BadRequest("--models all needs --model-store.")
        return [(None, p) for p in sorted(Path(store).iterdir())
                if p.name.endswith(ARCHIVE_SUFFIXES) or (p / "MAR-INF").is_dir()]
    name, _, file = entry.rpartition("=")
    return [(name or None, find_archive(file, store))]


def find_archive(name: str | os.PathLike, store: str | os.PathLike | None) -> Path:
    """The archive ``name`` means: a path, or else a file or folder in the model store."""
    path = Path(name).expanduser()
    if not path.exists() and store is not None:
        path = Path(store) / name
    if not path.exists():
        raise BadRequest(f"Model archive {str(name)!r} not found"
                         + (f" in the model store {store}." if store else "."))
    return path


def startup_archive(config: ServerConfig, name: str | None, path: Path) -> tuple[ModelArchive, dict]:
    """A startup model's archive and its registration settings: its name, and what
    config.properties' ``models`` sets for it (batchSize, maxBatchDelay, minWorkers, ...)."""
    archive = open_archive(path)
    name = name or archive.model_name
    settings = config.model_settings().get(name, {}).get(archive.version, {})
    return archive, {"model_name": name, **registration_settings(settings)}


def registration_settings(settings: dict) -> dict:
    """A model's settings as TorchServe's ``models`` property and snapshots write them
    (``batchSize``, ``minWorkers``...), as the engine's registration takes them."""
    return {"batch_size": settings.get("batchSize"),
            "max_batch_delay": settings.get("maxBatchDelay"),
            "initial_workers": settings.get("minWorkers"),
            "max_workers": settings.get("maxWorkers"),
            "response_timeout": settings.get("responseTimeout"),
            "job_queue_size": settings.get("jobQueueSize")}


def startup_archives(config: ServerConfig, models: list[str]) -> list[tuple[ModelArchive, dict]]:
    """Each startup model's archive and registration settings."""
    return [startup_archive(config, name, path) for name, path in startup_models(config, models)]


def register_startup_models(engine: Engine, config: ServerConfig, models: list[str], *,
                            replace: bool = False) -> list[ModelVersion]:
    """Load ``--models`` (or ``load_models``) with the settings config.properties gives each.

    As TorchServe does, a model that fails to load does not stop the others: it is recorded in
    ``engine.failures`` with its traceback, and asking for it answers why.
    """
    loaded = []
    for entry in startup_entries(config, models):
        try:
            loads = entry_archives(entry, config.model_store)
        except BadRequest as missing:  # TorchServe starts without it too
            name, _, file = entry.rpartition("=")
            engine.record_failure(name or Path(file).name.split(".")[0], file, missing)
            continue
        for name, path in loads:
            try:
                archive, settings = startup_archive(config, name, path)
                name = settings["model_name"]
                loaded.append(engine.register(archive, replace=replace, **settings))
            except Exception as error:  # noqa: BLE001 - recorded, and shown by the caller
                engine.record_failure(name or path.name.split(".")[0], path, error)
    for name, versions in config.model_settings().items():  # defaultVersion, once all loaded
        for version, settings in versions.items():
            if isinstance(settings, dict) and settings.get("defaultVersion") \
                    and any(v.name == name and v.version == version for v in loaded):
                engine.set_default(name, version)
    return loaded


def grpc_installed() -> bool:
    """Whether TorchServe's gRPC APIs can be served (pip install 'nbserve[grpc]')."""
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("grpc", "google.protobuf"))


def start_serving(config: ServerConfig, models: list[str]) -> tuple[Engine, Server]:
    """Load the startup models into a new engine and start its HTTP server; workers are
    processes unless config.properties' ``isolation`` says threads, as in TorchServe."""
    if config.model_store and not Path(config.model_store).is_dir():  # TorchServe refuses too
        raise BadRequest(f"The model store {config.model_store} is not a folder: create it, or "
                         "name one with --model-store.")
    engine = engine_for(config, isolation="process")
    try:
        register_startup_models(engine, config, models)
        if engine.failures and config.restoring:
            # A snapshot is the server's whole state: TorchServe refuses to start on half of it.
            raise BadRequest(f"the snapshot names {', '.join(sorted(engine.failures))}, which "
                             "could not be loaded (--ts-config names another file; --ncs "
                             "starts without snapshots)")
        server = Server(engine, config).start()
    except BaseException:
        engine.close()
        raise
    return engine, server
