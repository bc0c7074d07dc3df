"""Files that hold secrets (keys, a kernel's announcement): written and read by their owner only,
never through a link."""

from __future__ import annotations

import os
from pathlib import Path


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


def read_own(path: Path) -> str:
    """The text of a file this user owns and alone may read or write; PermissionError else."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(descriptor) as f:
        info = os.fstat(f.fileno())
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise PermissionError(f"{path} is not this user's own private file")
        return f.read()
