"""A notebook's served models, kept across kernel restarts.

A kernel that serves writes what it serves, after each change, to Jupyter's runtime folder,
one file per notebook (``nbserve-snapshot-<notebook>.json``): TorchServe's ``model_snapshot``
(nbserve.api.snapshot: each archive by path, with its settings) and the models served from live
objects, with the cell that served them, which no file can bring back. After a restart,
``%load_ext nbserve`` says what there is to restore and ``%serve --restore`` serves it again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from jupyter_core.paths import jupyter_runtime_dir

from nbserve.api.snapshot import model_snapshot
from nbserve.api.startup import registration_settings
from nbserve.files import write_private
from nbserve.serving.engine import Engine


def notebook() -> str:
    """The notebook this kernel runs (jupyter-server tells its kernels), else the folder."""
    return os.environ.get("JPY_SESSION_NAME") or os.getcwd()


def snapshot_path(name: str | None = None) -> Path:
    digest = hashlib.sha256((name or notebook()).encode()).hexdigest()[:16]
    return Path(jupyter_runtime_dir()) / f"nbserve-snapshot-{digest}.json"


def write(engine: Engine, live_cells: dict[str, str]) -> None:
    """What ``engine`` serves now, for this notebook's next kernel."""
    snapshot = model_snapshot(engine, None, snapshot_path().name)
    served = {model.name for model in engine.models()}
    snapshot["notebook"] = notebook()
    snapshot["live"] = {name: cell for name, cell in live_cells.items() if name in served}
    write_private(snapshot_path(), json.dumps(snapshot, indent=2))


def read() -> dict | None:
    """This notebook's last snapshot, if it served anything."""
    try:
        snapshot = json.loads(snapshot_path().read_text())
    except (OSError, ValueError):
        return None
    return snapshot if snapshot.get("models") or snapshot.get("live") else None


def summary(snapshot: dict) -> str:
    """One line on what a snapshot holds, for ``%load_ext nbserve``."""
    archives = sorted(snapshot.get("models", {}))
    line = ""
    if archives:
        line = (f"nbserve: this notebook served {', '.join(archives)} before its kernel "
                "restarted; %serve --restore serves them again.")
    for name, cell in sorted(snapshot.get("live", {}).items()):
        line += f"\n{name} was a live object served in {cell}: run that cell again."
    return line.strip()


def restore(session, snapshot: dict) -> list[str]:
    """Serve a snapshot's archives again in ``session``, with their settings and default
    versions; a line for each model, served or not."""
    lines = []
    for name, versions in sorted(snapshot.get("models", {}).items()):
        for version, settings in versions.items():
            try:
                served = session.serve(settings["marName"], model_name=name,
                                       **registration_settings(settings))
            except Exception as error:  # noqa: BLE001 - said, and the others restored
                lines.append(f"{name} {version} ({settings['marName']}) was not restored: "
                             f"{type(error).__name__}: {error}")
                continue
            lines.append(f"Restored {name} {served.version} from {settings['marName']}.")
    for name, cell in sorted(snapshot.get("live", {}).items()):
        lines.append(f"{name} was a live object served in {cell}: run that cell again.")
    return lines
