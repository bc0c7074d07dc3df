"""TorchServe's config snapshots, so a restarted server serves what it served before.

``nbserve serve`` writes ``<LOG_LOCATION>/config/<yyyyMMddHHmmssSSS>-startup.cfg`` once it has
started, ``-snapshot.cfg`` after each change to what it serves (register, scale, set-default,
unregister) and ``-shutdown.cfg`` when it stops, as TorchServe does (``--ncs`` writes none).
Each is a config.properties, Java-escaped, with the server's settings and the
``model_snapshot`` property: ``{"name", "modelCount", "created", "models": {name: {version:
{"defaultVersion", "marName", "minWorkers", "maxWorkers", "batchSize", "maxBatchDelay",
"responseTimeout", "startupTimeout", "runtimeType"}}}}``, so either server starts from the
other's file. Started without ``--ts-config``, ``nbserve serve`` starts from the newest.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path

from nbserve.config import SERVER_DEFAULTS, ServerConfig, write_properties
from nbserve.logs import log_location
from nbserve.serving.engine import Engine
from nbserve.serving.model_version import ModelVersion
from nbserve.store.live import LiveModel

#: Settings that describe this run rather than the server: never carried to the next.
_NOT_CARRIED = {"model_snapshot", "access_log", "models", "load_models"}


def snapshot_folder() -> Path:
    return log_location() / "config"


def latest_snapshot(folder: Path | None = None) -> Path | None:
    """The newest snapshot (their names start with their time), if any."""
    found = sorted((folder or snapshot_folder()).glob("*.cfg"))
    return found[-1] if found else None


def model_snapshot(engine: Engine, model_store: str | None, name: str) -> dict:
    """The ``model_snapshot`` property: every served version an archive can bring back (a
    live object, served from a kernel's memory, cannot be)."""
    models: dict[str, dict] = {}
    for model in engine.models():
        for version in model.versions.values():
            if isinstance(version.archive, LiveModel):
                continue
            models.setdefault(model.name, {})[version.version] = {
                "defaultVersion": version.version == model.default_version,
                "marName": mar_name(version, model_store),
                **_settings(version)}
    return {"name": name, "modelCount": len(models), "created": int(time.time() * 1000),
            "models": models}


def mar_name(version: ModelVersion, model_store: str | None) -> str:
    """The archive as the model store names it, else its path."""
    source = Path(version.archive.source).resolve()
    # Through links too: TorchServe's tooling links archives into the store.
    if model_store and (Path(model_store) / source.name).resolve() == source:
        return source.name
    return str(source)


def _settings(version: ModelVersion) -> dict:
    config = version.config
    return {"minWorkers": config.min_workers, "maxWorkers": config.max_workers,
            "batchSize": config.batch_size, "maxBatchDelay": int(config.max_batch_delay),
            "responseTimeout": int(config.response_timeout),
            "startupTimeout": int(config.startup_timeout),
            "runtimeType": version.archive.runtime or "python"}


class Snapshots:
    """Writes a server's snapshots into ``folder``."""

    def __init__(self, config: ServerConfig, engine: Engine, folder: Path | None = None):
        self.config, self.engine = config, engine
        self.folder = folder or snapshot_folder()
        self._warned = False

    def write(self, kind: str) -> Path | None:
        """A ``startup``, ``snapshot`` or ``shutdown`` file of what is served now; None (and
        a line on stderr, once) where the folder cannot be written, as TorchServe serves on."""
        try:
            return self._write(kind)
        except OSError as error:
            if not self._warned:
                self._warned = True
                sys.stderr.write(f"nbserve: warning: snapshots cannot be written to "
                                 f"{self.folder} ({error.strerror}); serving without them.\n")
            return None

    def _write(self, kind: str) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        now = datetime.now()
        path = self.folder / f"{now:%Y%m%d%H%M%S}{now.microsecond // 1000:03d}-{kind}.cfg"
        while path.exists():  # two in one millisecond: the later sorts after
            path = path.with_name(path.stem + "0.cfg")
        values = {key: _property(value) for key, value in self.config.values.items()
                  if key not in _NOT_CARRIED and value is not None
                  and value != SERVER_DEFAULTS.get(key)}
        values["model_snapshot"] = json.dumps(
            model_snapshot(self.engine, self.config.model_store, path.name), indent=2)
        write_properties(path, values, "Saving snapshot")
        return path


def _property(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
