"""Model archives as nbserve reads them: a ``.mar`` (zip), a ``.tar.gz`` (members under
``{model_name}/``) or an unpacked folder, each with ``MAR-INF/MANIFEST.json``. :func:`open_archive`
reads all three for everything downstream, unpacking each archive once into the cache
(:mod:`.cache`); :mod:`.archiver` writes them as ``torch-model-archiver`` does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from nbserve.errors import ArchiveError, NBServeError
from nbserve.store.cache import (
    MAX_COMPRESSION_RATIO,
    MAX_UNPACKED_BYTES,
    Limits,
    cache_limit,
    check_private,
    content_digest,
    default_cache_dir,
    evict,
    hold,
    unpack,
)

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
    unpacked, in_use = unpack_cached(source, cache_dir, max_unpacked_bytes,
                                     max_compression_ratio, max_cache_bytes)
    return ModelArchive(source, *_root_and_manifest(unpacked, source), in_use=in_use)


def unpack_cached(source: Path, cache_dir: str | os.PathLike | None = None,
                  max_unpacked_bytes: int = MAX_UNPACKED_BYTES,
                  max_compression_ratio: float = MAX_COMPRESSION_RATIO,
                  max_cache_bytes: int | None = None) -> tuple[Path, object]:
    """An archive file unpacked into the cache, as :func:`open_archive` describes: the folder,
    and the lock that keeps it there while held."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(source, "rb") as f:
        read = os.fstat(f.fileno())
        digest = content_digest(f, source, read)
        unpacked = cache / digest
        if unpacked.is_dir():  # unpacked folders appear whole, by rename
            check_private(unpacked)
            in_use = hold(cache / f"{digest}.lock")  # released when the archive is dropped
            os.utime(unpacked)  # most recently used
        else:
            unpack(f, source, cache, unpacked,
                    Limits(read.st_size, max_unpacked_bytes, max_compression_ratio))
            after = os.fstat(f.fileno())
            if (after.st_size, after.st_mtime_ns) != (read.st_size, read.st_mtime_ns):
                shutil.rmtree(unpacked, ignore_errors=True)
                raise ArchiveError(f"{source} changed while it was read; open it again once "
                                   "it is written.")
            in_use = hold(cache / f"{digest}.lock")
            evict(cache, cache_limit(max_cache_bytes), keep=digest)
    return unpacked, in_use


def _root_and_manifest(unpacked: Path, source: Path) -> tuple[Path, dict]:
    """A ``.tar.gz`` keeps its files under ``{model_name}/``: serve from that folder."""
    if not (unpacked / MANIFEST_PATH).is_file():
        children = [c for c in unpacked.iterdir()]
        if len(children) == 1 and (children[0] / MANIFEST_PATH).is_file():
            unpacked = children[0]
    return unpacked, _read_manifest(unpacked, source)


def _read_manifest(root: Path, source: Path) -> dict:
    path = root / MANIFEST_PATH
    if not path.is_file() and (root / "config.json").is_file():
        return hugging_face_manifest(root, source)
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


def hugging_face_manifest(root: Path, source: Path) -> dict:
    """A Hugging Face model folder (what ``save_pretrained`` writes) served as an archive of
    the text generation handler, named after the folder."""
    try:
        config = json.loads((root / "config.json").read_text())
    except (OSError, ValueError):
        config = None
    if not isinstance(config, dict) or not ("architectures" in config or "model_type" in config):
        raise ArchiveError(f"{source} has no {MANIFEST_PATH} and its config.json is not a "
                           "Hugging Face model's: it is not a model archive.")
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(source).name.split(".")[0]) or "model"
    return {"runtime": "python", "model": {"modelName": name, "modelVersion": "1.0",
                                           "handler": "text_generation"}}


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


