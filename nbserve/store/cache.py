"""Where archives are unpacked: once each, under their content's SHA-256, into a private folder,
refusing members that would write outside it and archives that would unpack to an absurd size;
the least recently opened are evicted past a size limit."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from nbserve.errors import ArchiveError

#: Bytes read or written at a time.
CHUNK = 4 * 2**20

#: An archive may unpack to at most this many bytes ...
MAX_UNPACKED_BYTES = 64 * 2**30
#: ... and, past ``_RATIO_FLOOR`` bytes, to at most this many times its own size. Model weights
#: barely compress, so a ratio far above this is a zip bomb, not a model.
MAX_COMPRESSION_RATIO = 200
_RATIO_FLOOR = 64 * 2**20
MAX_MEMBERS = 100_000

def default_cache_dir() -> Path:
    """Where archives are unpacked: ``$NBSERVE_CACHE_DIR``, else ``~/.cache/nbserve/archives``."""
    if "NBSERVE_CACHE_DIR" in os.environ:
        return Path(os.environ["NBSERVE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nbserve" / "archives"


def cache_limit(max_cache_bytes: int | None) -> int:
    if max_cache_bytes is not None:
        return max_cache_bytes
    return int(os.environ.get("NBSERVE_CACHE_MAX_BYTES", 20 * 2**30))


#: Digests already computed in this process, by (path, size, mtime): registering or replacing
#: a multi-GB archive again reads it once, not once per open.
_digests: dict[tuple[str, int, int], str] = {}


def content_digest(f: BinaryIO, path: Path, read: os.stat_result) -> str:
    key = (str(path.resolve()), read.st_size, read.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        while chunk := f.read(CHUNK):
            digest.update(chunk)
        _digests[key] = digest.hexdigest()
    return _digests[key]


def unpack(f: BinaryIO, source: Path, cache: Path, unpacked: Path, limits: "Limits") -> None:
    """Unpack the open archive ``f`` into ``unpacked``, whole or not at all."""
    temp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=cache))
    try:
        try:
            f.seek(0)
            if zipfile.is_zipfile(f):
                _unpack_zip(f, source, temp, limits)
            else:
                f.seek(0)
                if not tarfile.is_tarfile(f):  # reads the head, and seeks back
                    raise ArchiveError(f"{source} is neither a .mar (zip) nor a .tar.gz archive.")
                _unpack_tar(f, source, temp, limits)
        except OSError as e:
            # A member that is both a file and a folder, a name the file system refuses...:
            # the archive's fault, answered as such, without the cache's paths.
            raise ArchiveError(f"{source} cannot be unpacked: {e.strerror or type(e).__name__} "
                               f"at member {_member_named(e, temp)!r}; refused.") from None
        try:
            os.replace(temp, unpacked)
        except OSError:  # another process unpacked the same archive first
            check_private(unpacked)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _member_named(error: OSError, temp: Path) -> str:
    """The member an unpacking error is about, relative to the archive (never a cache path)."""
    try:
        return Path(error.filename).relative_to(temp).as_posix()
    except (TypeError, ValueError):
        return "?"


def check_private(folder: Path) -> None:
    """Refuse an unpacked folder another user owns or may write to: its code would run here."""
    info = folder.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise ArchiveError(f"The unpacked archive {folder} is not private to this user (owner "
                           f"{info.st_uid}, mode {oct(info.st_mode & 0o777)}): remove it, or "
                           "set NBSERVE_CACHE_DIR to a folder of your own.")


def hold(lock_path: Path):
    """A shared lock on ``lock_path``, held while the returned file is open: eviction skips
    archives some process holds."""
    handle = open(lock_path, "a")
    fcntl.flock(handle, fcntl.LOCK_SH)
    return handle


def evict(cache: Path, limit: int, keep: str) -> None:
    """Delete the least recently opened unpacked archives until the cache fits ``limit``;
    archives any process holds, and ``keep``, stay."""
    entries = []
    for folder in cache.iterdir():
        if re.fullmatch(r"[0-9a-f]{64}", folder.name) and folder.is_dir():
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            entries.append((folder.stat().st_mtime, size, folder))
    total = sum(size for _, size, _ in entries)
    for _, size, folder in sorted(entries):
        if total <= limit:
            return
        if folder.name == keep:
            continue
        with open(cache / f"{folder.name}.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # open in some process
            shutil.rmtree(folder, ignore_errors=True)
            total -= size


@dataclass
class Limits:
    """Running totals checked as members are unpacked."""

    archive_bytes: int
    max_bytes: int
    max_ratio: float
    unpacked: int = 0
    members: int = 0

    def add(self, source: Path, name: str, size: int) -> None:
        self.members += 1
        self.unpacked += size
        if self.members > MAX_MEMBERS:
            raise ArchiveError(f"{source} has more than {MAX_MEMBERS} members; refused.")
        if self.unpacked > self.max_bytes:
            raise ArchiveError(
                f"{source} would unpack to more than {self.max_bytes} bytes (at {name!r}); refused."
            )
        if self.unpacked > _RATIO_FLOOR and self.unpacked > self.max_ratio * self.archive_bytes:
            raise ArchiveError(
                f"{source} would unpack to over {self.max_ratio:g} times its size "
                f"(a zip bomb?); refused."
            )


def _member_path(source: Path, name: str) -> PurePosixPath:
    """The relative path a member may be written to; refuses absolute and ``..`` names."""
    path = PurePosixPath(name)
    if (name.startswith(("/", "\\")) or "\\" in name or re.match(r"^[A-Za-z]:", name)
            or ".." in path.parts or "\x00" in name):
        raise ArchiveError(
            f"{source} has a member with an unsafe path {name!r} (absolute or with '..'); refused."
        )
    return path


def _unpack_zip(f: BinaryIO, source: Path, dest: Path, limits: Limits) -> None:
    try:
        _unpack_zip_members(f, source, dest, limits)
    except (zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise ArchiveError(f"{source} is not a readable .mar (zip) archive ({e}).") from None


def _unpack_zip_members(f: BinaryIO, source: Path, dest: Path, limits: Limits) -> None:
    with zipfile.ZipFile(f) as zf:
        infos = zf.infolist()
        for info in infos:  # check every header before writing anything
            _member_path(source, info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise ArchiveError(f"{source} has a symbolic link {info.filename!r}; refused.")
            limits.add(source, info.filename, info.file_size)
        for info in infos:
            target = dest / _member_path(source, info.filename)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                _copy_at_most(src, out, info.file_size, source, info.filename)


def _unpack_tar(f: BinaryIO, source: Path, dest: Path, limits: Limits) -> None:
    try:
        with tarfile.open(fileobj=f, mode="r|*") as tar:  # streamed: headers are checked as they come
            for member in tar:
                path = _member_path(source, member.name)
                if member.isdir():
                    limits.add(source, member.name, 0)  # folders count: 120,000 cost inodes
                    (dest / path).mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isreg():
                    raise ArchiveError(
                        f"{source} has a link or special file {member.name!r}; refused."
                    )
                limits.add(source, member.name, member.size)
                target = dest / path
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as out:
                    _copy_at_most(src, out, member.size, source, member.name)
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise ArchiveError(f"{source} is not a readable .tar.gz archive ({e}).") from None


def _copy_at_most(src: BinaryIO, out: BinaryIO, size: int, source: Path, name: str) -> None:
    """Copy a member, trusting its data no further than the size its header declared."""
    written = 0
    while chunk := src.read(CHUNK):
        written += len(chunk)
        if written > size:
            raise ArchiveError(f"{source}: member {name!r} is larger than its header says; refused.")
        out.write(chunk)
