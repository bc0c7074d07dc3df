"""How a kernel's engine lets the jupyter-server extension find it: a file in Jupyter's runtime dir.

While a kernel serves, ``nbserve-kernel-<id>.json`` there holds its kernel id, process id,
loopback URLs and a secret the extension sends with each request it forwards. The file is
readable by its owner only, is removed when serving stops or the kernel exits, and one left by
a process that died is ignored and removed by whoever reads it. One that another user owns, or
that others may read or write, or a link, is never read: where the runtime dir is shared, no one
else can point the extension at a server of theirs.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from jupyter_core.paths import jupyter_runtime_dir

from nbserve.files import private_folder, read_own, write_private

#: The header that carries the secret from the extension to the kernel's server.
SECRET_HEADER = "X-NBServe-Secret"
_PREFIX = "nbserve-kernel-"


@dataclass(frozen=True)
class Announcement:
    kernel_id: str
    pid: int
    urls: dict[str, str]
    secret: str
    started: float

    @property
    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def current_kernel_id() -> str | None:
    """This process's Jupyter kernel id, from its connection file; None outside a kernel."""
    try:
        from ipykernel.connect import get_connection_file
        name = Path(get_connection_file()).name
    except (ImportError, RuntimeError, AttributeError):
        return None
    if name.startswith("kernel-") and name.endswith(".json"):
        return name[len("kernel-"):-len(".json")]
    return None


def announce(kernel_id: str, urls: dict[str, str], secret: str,
             runtime_dir: str | os.PathLike | None = None) -> Path:
    """Write this kernel's announcement; it is withdrawn at exit if not before."""
    folder = private_folder(runtime_dir or jupyter_runtime_dir())
    path = folder / f"{_PREFIX}{kernel_id}.json"
    record = Announcement(kernel_id, os.getpid(), dict(urls), secret, time.time())
    write_private(path, json.dumps(asdict(record)))
    atexit.register(withdraw, path)
    return path


def withdraw(path: Path) -> None:
    path.unlink(missing_ok=True)


def announcements(runtime_dir: str | os.PathLike | None = None) -> list[Announcement]:
    """The kernels serving now, newest first; files of dead processes are removed."""
    found = []
    for path in Path(runtime_dir or jupyter_runtime_dir()).glob(f"{_PREFIX}*.json"):
        try:
            record = Announcement(**json.loads(read_own(path)))
        except (OSError, ValueError, TypeError):
            continue
        if record.alive:
            found.append(record)
        else:
            withdraw(path)
    return sorted(found, key=lambda a: a.started, reverse=True)
