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


def private_folder(folder: str | os.PathLike) -> Path:
    """``folder``, created readable by its owner only if it is new (as Jupyter makes its
    runtime dir); refused if another user owns it or may write to it."""
    folder = Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise PermissionError(f"{folder} is not private to this user (owner {info.st_uid}, mode "
                              f"{oct(info.st_mode & 0o777)}): nbserve keeps secrets there.")
    return folder


def write_private(path: Path, text: str) -> None:
    """Write ``path`` whole, mode 0600, through a new file that no link can redirect."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w") as f:
        f.write(text)
    os.replace(partial, path)


def _read_own(path: Path) -> str:
    """The text of a file this user owns and alone may read or write; PermissionError else."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(descriptor) as f:
        info = os.fstat(f.fileno())
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise PermissionError(f"{path} is not this user's own private file")
        return f.read()


def withdraw(path: Path) -> None:
    path.unlink(missing_ok=True)


def announcements(runtime_dir: str | os.PathLike | None = None) -> list[Announcement]:
    """The kernels serving now, newest first; files of dead processes are removed."""
    found = []
    for path in Path(runtime_dir or jupyter_runtime_dir()).glob(f"{_PREFIX}*.json"):
        try:
            record = Announcement(**json.loads(_read_own(path)))
        except (OSError, ValueError, TypeError):
            continue
        if record.alive:
            found.append(record)
        else:
            withdraw(path)
    return sorted(found, key=lambda a: a.started, reverse=True)
