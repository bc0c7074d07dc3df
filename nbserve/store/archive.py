"""Model archives: written as torch-model-archiver writes them, read safely by one reader.

An archive is a model's files plus ``MAR-INF/MANIFEST.json``, stored as a ``.mar`` (zip), a
``.tar.gz`` (members under ``{model_name}/``) or an unpacked folder. :func:`archive` makes the
same member names and manifest as ``torch-model-archiver`` 0.12 from the same flags, so TorchServe
serves what nbserve makes. :func:`open_archive` reads all three forms for everything downstream:
it unpacks each archive once into a cache keyed by its content, and refuses archives that would
write outside their folder or unpack to an absurd size.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, Iterable

from nbserve.errors import ArchiveError, NBServeError
from nbserve.handlers import TORCHSERVE_HANDLERS

MANIFEST_PATH = "MAR-INF/MANIFEST.json"

#: ``--archive-format`` choices and the suffix each gives the archive.
ARCHIVE_FORMATS = {"default": ".mar", "zip-store": ".mar", "tgz": ".tar.gz", "no-archive": ""}
RUNTIMES = ("python", "python3", "LSP")

#: TorchServe's rule for model names (the frontend and the archiver both apply it).
MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]*$")
#: Versions as people write them (1.0, 2.1.3-rc1, 1.0+cpu): they go into URLs, file names and
#: metrics labels, so nothing else.
MODEL_VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.+]*$")
#: Manifest keys that name files in the archive.
_FILE_KEYS = ("serializedFile", "modelFile", "handler", "requirementsFile", "configFile")

#: Folders torch-model-archiver leaves out when it copies a folder of extra files.
_SKIPPED_DIRS = {"__MACOSX", "__pycache__"}

#: An archive may unpack to at most this many bytes ...
MAX_UNPACKED_BYTES = 64 * 2**30
#: ... and, past ``_RATIO_FLOOR`` bytes, to at most this many times its own size. Model weights
#: barely compress, so a ratio far above this is a zip bomb, not a model.
MAX_COMPRESSION_RATIO = 200
_RATIO_FLOOR = 64 * 2**20
MAX_MEMBERS = 100_000

_CHUNK = 4 * 2**20

#: ``progress(done_bytes, total_bytes)``, called as an archive is written.
Progress = Callable[[int, int], None]


def archive(
    model_name: str,
    version: str,
    handler: str,
    *,
    serialized_file: str | os.PathLike | None = None,
    model_file: str | os.PathLike | None = None,
    extra_files: str | Iterable[str | os.PathLike] | None = None,
    requirements_file: str | os.PathLike | None = None,
    config_file: str | os.PathLike | None = None,
    runtime: str = "python",
    export_path: str | os.PathLike = ".",
    archive_format: str = "default",
    force: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Write a model archive, as ``torch-model-archiver`` does with the same arguments.

    ``handler`` is a default handler's name (``image_classifier``), a ``.py`` file, or
    ``file.py:function``. ``extra_files`` is a comma-separated string (as on the command line)
    or a list; folders contribute their contents, wildcards are expanded. Returns the path of the
    ``.mar``, ``.tar.gz`` or folder written. The archive appears whole or not at all.

    >>> archive("densenet161", "1.0", "image_classifier", model_file="model.py",
    ...         serialized_file="densenet161.pth", extra_files="index_to_name.json",
    ...         export_path="model-store")                                   # doctest: +SKIP
    PosixPath('model-store/densenet161.mar')
    """
    check_model_name(model_name)
    if not version:
        raise ArchiveError(f"Model {model_name!r} needs a version (--version, e.g. 1.0).")
    check_model_version(version)
    if runtime not in RUNTIMES:
        raise ArchiveError(f"Unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}.")
    if archive_format not in ARCHIVE_FORMATS:
        raise ArchiveError(
            f"Unknown archive format {archive_format!r}: choose one of {', '.join(ARCHIVE_FORMATS)}."
        )

    export_dir = Path(export_path)
    if export_dir.exists() and not export_dir.is_dir():
        raise ArchiveError(f"Export path {str(export_dir)!r} is not a directory.")
    target = export_dir / f"{model_name}{ARCHIVE_FORMATS[archive_format]}"
    if target.exists() and not force:
        raise ArchiveError(
            f"{target} already exists. Use --force/-f to overwrite it."
        )

    members = _collect_members(
        model_file=model_file,
        serialized_file=serialized_file,
        handler=_handler_file(handler, runtime),
        extra_files=extra_files,
        requirements_file=requirements_file,
        config_file=config_file,
    )
    manifest = _manifest_json(
        model_name, version, handler, runtime, serialized_file, model_file,
        requirements_file, config_file,
    )
    export_dir.mkdir(parents=True, exist_ok=True)
    _write(target, archive_format, model_name, members, manifest, progress)
    return target


def check_model_name(name: str | None, error: type[NBServeError] = ArchiveError) -> str:
    """``name``, if TorchServe takes it as a model name; ``error`` saying the rule if not."""
    if not MODEL_NAME_PATTERN.match(name or ""):
        raise error(f"Invalid model name {name!r}: use letters, digits, '_', '-' and '.', "
                    "starting with a letter or digit.")
    return name


def check_model_version(version: str | None, error: type[NBServeError] = ArchiveError) -> str:
    """``version``, if it is a version (``1.0``); ``error`` saying the rule if not."""
    if not MODEL_VERSION_PATTERN.match(version or ""):
        raise error(f"Invalid model version {version!r}: use letters, digits, '_', '-', '.' "
                    "and '+', starting with a letter or digit.")
    return version


def _handler_file(handler: str, runtime: str) -> Path | None:
    """The file a ``--handler`` value names, or None for a default handler's name."""
    if not handler:
        raise ArchiveError("A handler is required (--handler image_classifier, or a .py file).")
    if runtime.startswith("python") and handler in TORCHSERVE_HANDLERS:
        return None
    module = handler.split(":", 1)[0]
    candidates = [Path(module)] if module.endswith(".py") else [Path(module + ".py"), Path(module)]
    for path in candidates:
        if path.is_file():
            return path
    raise ArchiveError(
        f"Unknown handler {handler!r}: it is neither a default handler "
        f"({', '.join(TORCHSERVE_HANDLERS)}) nor a file ({candidates[0]} does not exist)."
    )


def _collect_members(*, model_file, serialized_file, handler, extra_files,
                     requirements_file, config_file) -> dict[str, Path]:
    """Map each archive member name to its source file, in torch-model-archiver's order.

    As there, everything lands at the archive's top level and a later file of the same name
    replaces an earlier one.
    """
    members: dict[str, Path] = {}
    for kind, value in (("model file", model_file), ("serialized file", serialized_file),
                        ("handler", handler)):
        if value is not None:
            path = _existing_file(value, kind)
            members[path.name] = path
    for path in _expand_extra_files(extra_files):
        if path.is_dir():
            for source in _walk(path):
                members[source.relative_to(path).as_posix()] = source
        else:
            members[path.name] = path
    for kind, value in (("requirements file", requirements_file), ("config file", config_file)):
        if value is not None:
            path = _existing_file(value, kind)
            members[path.name] = path
    return members


def _existing_file(value, kind: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise ArchiveError(f"The {kind} {str(path)!r} does not exist or is not a file.")
    return path


def _expand_extra_files(extra_files) -> list[Path]:
    if not extra_files:
        return []
    entries = extra_files.split(",") if isinstance(extra_files, str) else list(extra_files)
    paths: list[Path] = []
    for entry in (str(e).strip() for e in entries):
        if not entry:
            continue
        if glob.has_magic(entry):
            paths.extend(Path(p) for p in sorted(glob.glob(entry)))
        elif Path(entry).exists():
            paths.append(Path(entry))
        else:
            raise ArchiveError(f"The extra file {entry!r} does not exist.")
    return paths


def _walk(folder: Path) -> Iterable[Path]:
    """Files under ``folder``, leaving out hidden and cache folders as torch-model-archiver does."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS and not d.startswith("."))
        for name in sorted(files):
            yield Path(root, name)


def _manifest_json(model_name, version, handler, runtime, serialized_file, model_file,
                   requirements_file, config_file) -> str:
    """``MANIFEST.json`` with torch-model-archiver's keys, in its order and indentation."""
    from nbserve._version import __version__

    model = {"modelName": model_name}
    if serialized_file:
        model["serializedFile"] = Path(serialized_file).name
    model["handler"] = os.path.basename(handler)
    if model_file:
        model["modelFile"] = Path(model_file).name
    model["modelVersion"] = version
    if requirements_file:
        model["requirementsFile"] = Path(requirements_file).name
    if config_file:
        model["configFile"] = Path(config_file).name
    manifest = {
        "createdOn": datetime.now().strftime("%d/%m/%Y %H:%M:%S"),
        "runtime": runtime,
        "model": model,
        "archiverVersion": __version__,
    }
    return json.dumps(manifest, indent=2)


def _write(target: Path, archive_format: str, model_name: str, members: dict[str, Path],
           manifest: str, progress: Progress | None) -> None:
    """Write into a temporary sibling, then move it into place, so no half archive is left."""
    meter = _Meter(sum(p.stat().st_size for p in members.values()), progress)
    temp = Path(tempfile.mkdtemp(prefix=f".{model_name}.", dir=target.parent))
    try:
        if archive_format == "no-archive":
            staged = temp / model_name
            for name, source in members.items():
                dest = staged / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                with open(source, "rb") as src, open(dest, "wb") as out:
                    meter.copy(src, out)
            (staged / "MAR-INF").mkdir(parents=True, exist_ok=True)
            (staged / MANIFEST_PATH).write_text(manifest)
        elif archive_format == "tgz":
            staged = temp / (model_name + ".tar.gz")
            with tarfile.open(staged, "w:gz") as tar:
                for name, source in members.items():
                    with open(source, "rb") as src:
                        tar.addfile(tar.gettarinfo(source, f"{model_name}/{name}"), meter.reader(src))
                info = tarfile.TarInfo(f"{model_name}/{MANIFEST_PATH}")
                data = manifest.encode()
                info.size, info.mtime = len(data), int(datetime.now().timestamp())
                tar.addfile(info, io.BytesIO(data))
        else:
            staged = temp / (model_name + ".mar")
            compression = zipfile.ZIP_STORED if archive_format == "zip-store" else zipfile.ZIP_DEFLATED
            with zipfile.ZipFile(staged, "w", compression) as zf:
                for name, source in members.items():
                    info = zipfile.ZipInfo.from_file(source, name)
                    info.compress_type = compression
                    with open(source, "rb") as src, zf.open(info, "w", force_zip64=True) as out:
                        meter.copy(src, out)
                zf.writestr(MANIFEST_PATH, manifest)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(staged, target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


class _Meter:
    """Counts bytes copied and reports them to a progress callback."""

    def __init__(self, total: int, progress: Progress | None):
        self.total, self.done, self.progress = total, 0, progress

    def advance(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.done, self.total)

    def copy(self, src: BinaryIO, out: BinaryIO) -> None:
        while chunk := src.read(_CHUNK):
            out.write(chunk)
            self.advance(len(chunk))

    def reader(self, src: BinaryIO) -> BinaryIO:
        meter = self

        class _Counting:
            def read(self, n=-1):
                chunk = src.read(n)
                meter.advance(len(chunk))
                return chunk

        return _Counting()


@dataclass(frozen=True)
class ModelArchive:
    """An archive opened for serving: its unpacked folder and its manifest."""

    source: Path
    path: Path
    manifest: dict
    #: The shared lock that keeps the unpacked folder out of eviction while this is alive.
    in_use: object = field(default=None, compare=False, repr=False)

    @property
    def model(self) -> dict:
        return self.manifest.get("model", {})

    @property
    def model_name(self) -> str:
        return self.model.get("modelName", "")

    @property
    def version(self) -> str:
        return self.model.get("modelVersion", "")

    @property
    def handler(self) -> str:
        return self.model.get("handler", "")

    @property
    def runtime(self) -> str:
        return self.manifest.get("runtime", "python")

    def file(self, key: str) -> Path | None:
        """The unpacked file a manifest key names (``serializedFile``, ``modelFile``, ...)."""
        name = self.model.get(key)
        return self.path / name if name else None


def open_archive(
    source: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    max_unpacked_bytes: int = MAX_UNPACKED_BYTES,
    max_compression_ratio: float = MAX_COMPRESSION_RATIO,
    max_cache_bytes: int | None = None,
) -> ModelArchive:
    """Open a ``.mar``, a ``.tar.gz`` or an unpacked folder.

    Archives are unpacked once into ``cache_dir`` (default: :func:`default_cache_dir`) under
    their content's SHA-256, so opening the same archive again costs one read, not one unpack.
    The bytes unpacked are the bytes hashed (one open file, refused if it changes meanwhile);
    an unpacked folder is used only if this user owns it and no one else may write to it.
    Members with absolute paths or ``..``, links and devices, and archives that would unpack to
    more than ``max_unpacked_bytes`` or more than ``max_compression_ratio`` times their size are
    refused with :class:`~nbserve.errors.ArchiveError`; nothing is written outside the cache.
    The cache keeps at most ``max_cache_bytes`` (default ``$NBSERVE_CACHE_MAX_BYTES``, else
    20 GiB), dropping the least recently opened archives that no process has open.
    """
    source = Path(source)
    if source.is_dir():
        return ModelArchive(source, source, _read_manifest(source, source))
    if not source.is_file():
        raise ArchiveError(f"Model archive {str(source)!r} not found.")

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(source, "rb") as f:
        read = os.fstat(f.fileno())
        digest = _sha256(f, source, read)
        unpacked = cache / digest
        if unpacked.is_dir():  # unpacked folders appear whole, by rename
            _check_private(unpacked)
            in_use = _hold(cache / f"{digest}.lock")  # released when the archive is dropped
            os.utime(unpacked)  # most recently used
        else:
            _unpack(f, source, cache, unpacked,
                    _Limits(read.st_size, max_unpacked_bytes, max_compression_ratio))
            after = os.fstat(f.fileno())
            if (after.st_size, after.st_mtime_ns) != (read.st_size, read.st_mtime_ns):
                shutil.rmtree(unpacked, ignore_errors=True)
                raise ArchiveError(f"{source} changed while it was read; open it again once "
                                   "it is written.")
            in_use = _hold(cache / f"{digest}.lock")
            _evict(cache, _cache_limit(max_cache_bytes), keep=digest)
    return ModelArchive(source, *_root_and_manifest(unpacked, source), in_use=in_use)


def default_cache_dir() -> Path:
    """Where archives are unpacked: ``$NBSERVE_CACHE_DIR``, else ``~/.cache/nbserve/archives``."""
    if "NBSERVE_CACHE_DIR" in os.environ:
        return Path(os.environ["NBSERVE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nbserve" / "archives"


def _cache_limit(max_cache_bytes: int | None) -> int:
    if max_cache_bytes is not None:
        return max_cache_bytes
    return int(os.environ.get("NBSERVE_CACHE_MAX_BYTES", 20 * 2**30))


#: Digests already computed in this process, by (path, size, mtime): registering or replacing
#: a multi-GB archive again reads it once, not once per open.
_digests: dict[tuple[str, int, int], str] = {}


def _sha256(f: BinaryIO, path: Path, read: os.stat_result) -> str:
    key = (str(path.resolve()), read.st_size, read.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
        _digests[key] = digest.hexdigest()
    return _digests[key]


def _unpack(f: BinaryIO, source: Path, cache: Path, unpacked: Path, limits: "_Limits") -> None:
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
            _check_private(unpacked)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _member_named(error: OSError, temp: Path) -> str:
    """The member an unpacking error is about, relative to the archive (never a cache path)."""
    try:
        return Path(error.filename).relative_to(temp).as_posix()
    except (TypeError, ValueError):
        return "?"


def _check_private(folder: Path) -> None:
    """Refuse an unpacked folder another user owns or may write to: its code would run here."""
    info = folder.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise ArchiveError(f"The unpacked archive {folder} is not private to this user (owner "
                           f"{info.st_uid}, mode {oct(info.st_mode & 0o777)}): remove it, or "
                           "set NBSERVE_CACHE_DIR to a folder of your own.")


def _hold(lock_path: Path):
    """A shared lock on ``lock_path``, held while the returned file is open: eviction skips
    archives some process holds."""
    handle = open(lock_path, "a")
    fcntl.flock(handle, fcntl.LOCK_SH)
    return handle


def _evict(cache: Path, limit: int, keep: str) -> None:
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


def _root_and_manifest(unpacked: Path, source: Path) -> tuple[Path, dict]:
    """A ``.tar.gz`` keeps its files under ``{model_name}/``: serve from that folder."""
    if not (unpacked / MANIFEST_PATH).is_file():
        children = [c for c in unpacked.iterdir()]
        if len(children) == 1 and (children[0] / MANIFEST_PATH).is_file():
            unpacked = children[0]
    return unpacked, _read_manifest(unpacked, source)


def _read_manifest(root: Path, source: Path) -> dict:
    path = root / MANIFEST_PATH
    if not path.is_file():
        raise ArchiveError(f"{source} has no {MANIFEST_PATH}: it is not a model archive.")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArchiveError(f"{source}: {MANIFEST_PATH} is not valid JSON ({e}).") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("model"), dict):
        raise ArchiveError(f"{source}: {MANIFEST_PATH} has no \"model\" object.")
    _check_manifest(manifest["model"], source)
    return manifest


def _check_manifest(model: dict, source: Path) -> None:
    """Refuse a manifest whose files lie outside the archive, or whose version is no version."""
    if "modelVersion" in model:
        check_model_version(str(model["modelVersion"]))
    for key in _FILE_KEYS:
        name = model.get(key)
        if not name:
            continue
        if not isinstance(name, str):
            raise ArchiveError(f"{source}: {MANIFEST_PATH}'s {key} is not a file name.")
        if key == "handler" and ":" in name:
            name = name.split(":", 1)[0]  # file.py:function
        if name.startswith(("/", "\\")) or ".." in PurePosixPath(name.replace("\\", "/")).parts:
            raise ArchiveError(f"{source}: {MANIFEST_PATH}'s {key} {name!r} points outside "
                               "the archive; refused.")


@dataclass
class _Limits:
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


def _unpack_zip(f: BinaryIO, source: Path, dest: Path, limits: _Limits) -> None:
    try:
        _unpack_zip_members(f, source, dest, limits)
    except (zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise ArchiveError(f"{source} is not a readable .mar (zip) archive ({e}).") from None


def _unpack_zip_members(f: BinaryIO, source: Path, dest: Path, limits: _Limits) -> None:
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


def _unpack_tar(f: BinaryIO, source: Path, dest: Path, limits: _Limits) -> None:
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
    while chunk := src.read(_CHUNK):
        written += len(chunk)
        if written > size:
            raise ArchiveError(f"{source}: member {name!r} is larger than its header says; refused.")
        out.write(chunk)
