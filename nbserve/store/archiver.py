"""Archives written as ``torch-model-archiver`` 0.12 writes them: the same member names and
manifest from the same flags, so TorchServe serves what nbserve makes (``nbserve archive``,
``%archive``, :func:`nbserve.archive`)."""

from __future__ import annotations

import glob
import io
import json
import os
import shutil
import tarfile
import tempfile
import zipfile
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

from nbserve.errors import ArchiveError
from nbserve.handlers import TORCHSERVE_HANDLERS
from nbserve.store.archive import (
    ARCHIVE_FORMATS,
    MANIFEST_PATH,
    RUNTIMES,
    check_model_name,
    check_model_version,
)
from nbserve.store.cache import CHUNK

#: Folders torch-model-archiver leaves out when it copies a folder of extra files.
_SKIPPED_DIRS = {"__MACOSX", "__pycache__"}

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
    write_archive(target, archive_format, model_name, members, manifest, progress)
    return target


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
            path = existing_file(value, kind)
            members[path.name] = path
    members.update(extra_members(extra_files))
    for kind, value in (("requirements file", requirements_file), ("config file", config_file)):
        if value is not None:
            path = existing_file(value, kind)
            members[path.name] = path
    return members


def extra_members(extra_files) -> dict[str, Path]:
    """``--extra-files``' members, by name: a file at the top level, a folder's contents
    (wildcards expanded), as torch-model-archiver copies them."""
    members: dict[str, Path] = {}
    for path in _expand_extra_files(extra_files):
        if path.is_dir():
            for source in _walk(path):
                members[source.relative_to(path).as_posix()] = source
        else:
            members[path.name] = path
    return members


def existing_file(value, kind: str) -> Path:
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


def write_archive(target: Path, archive_format: str, model_name: str,
                  members: dict[str, Path], manifest: str, progress: Progress | None,
                  manifest_path: str = MANIFEST_PATH) -> None:
    """Write into a temporary sibling, then move it into place, so no half archive is left.
    (``manifest_path``: a workflow archive's is ``WAR-INF/MANIFEST.json``.)"""
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
                zf.writestr(manifest_path, manifest)
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
        while chunk := src.read(CHUNK):
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


