"""Per-model Python requirements: an archive's ``requirements.txt`` (``-r`` when archived),
installed before its handler loads when ``install_py_dep_per_model=true``, as TorchServe does.

TorchServe installs them with ``pip install -t`` into the model's folder. Here they go to a
folder of their own under the cache, named by the requirements file's hash, so an archive opened
again (or another with the same file) installs nothing. A worker process puts that folder first
on its ``sys.path`` (the process is the model's alone); thread workers share the server's
process, so there it goes last, where a model's packages cannot shadow the server's own or
another model's (:func:`use`). With the setting off, as TorchServe's default is, such an archive
loads with a warning that names the setting.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from nbserve.errors import NBServeError
from nbserve.store.cache import default_cache_dir

logger = logging.getLogger(__name__)


class RequirementsError(NBServeError):
    """pip could not install a model's requirements."""

    status = 400
    type = "ModelRequirementsException"


def install(requirements: Path, model_name: str, cache_dir: Path | None = None) -> Path:
    """Install ``requirements`` (once per content); the folder they are in. pip's output goes
    to the log; a failure names the requirement."""
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    cache = (cache_dir or default_cache_dir().parent) / "requirements"
    target = cache / digest
    if not target.is_dir():
        cache.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=".install-", dir=cache))
        logger.warning("Installing %s's requirements (%s) into %s", model_name, requirements.name,
                       target)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
             "--no-input", "--target", str(partial), "-r", str(requirements)],
            capture_output=True, text=True)
        if result.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise RequirementsError(f"Installing {model_name}'s requirements failed: "
                                    f"{_failure(result.stdout + result.stderr)}")
        logger.info("%s", result.stdout)
        try:
            os.replace(partial, target)
        except OSError:  # installed meanwhile by another process
            shutil.rmtree(partial, ignore_errors=True)
    return target


def use(folder: Path, *, first: bool) -> None:
    """Make the packages in ``folder`` importable: ``first`` in a process of the model's own,
    last in a process that others share."""
    if str(folder) in sys.path:
        return
    if first:
        sys.path.insert(0, str(folder))
    else:
        sys.path.append(str(folder))


def _failure(output: str) -> str:
    """pip's line that names what failed, or its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("ERROR:"):
            return line[len("ERROR:"):].strip()
    return lines[-1] if lines else "pip gave no reason"
