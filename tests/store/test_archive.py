"""Writing and reading model archives, against the real torch-model-archiver 0.12."""

import io
import json
import re
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from nbserve.errors import ArchiveError
from nbserve.store.archive import MANIFEST_PATH, open_archive
from nbserve.store.archiver import archive
from tests.support.helpers import tree

TMA = shutil.which("torch-model-archiver")
needs_tma = pytest.mark.skipif(TMA is None, reason="torch-model-archiver is not installed")

SUFFIX = {"default": ".mar", "zip-store": ".mar", "tgz": ".tar.gz", "no-archive": ""}


def flags(d: Path, handler="image_classifier") -> list[str]:
    return [
        "--model-name", "tiny", "--version", "1.0",
        "--model-file", str(d / "model.py"), "--serialized-file", str(d / "tiny.pth"),
        "--handler", handler,
        "--extra-files", f"{d / 'index_to_name.json'},{d / 'assets'}",
        "-r", str(d / "requirements.txt"), "-c", str(d / "model-config.yaml"),
    ]


def member_names(path: Path) -> set[str]:
    """The names an archive stores, as its own format lists them."""
    if path.is_dir():
        return set(tree(path))
    if zipfile.is_zipfile(path):
        return set(zipfile.ZipFile(path).namelist())
    with tarfile.open(path) as tar:
        return {m.name for m in tar.getmembers() if m.isfile()}


def comparable(manifest: dict) -> dict:
    """A manifest less the fields that name the time and the tool that wrote it."""
    return {k: v for k, v in manifest.items() if k not in ("createdOn", "archiverVersion")}


@needs_tma
@pytest.mark.parametrize("archive_format", list(SUFFIX))
@pytest.mark.parametrize("handler", ["image_classifier", "my_handler.py", "my_handler:handle"])
def test_same_members_and_manifest_as_torch_model_archiver(
        tiny_model_dir, tmp_path, monkeypatch, archive_format, handler):
    monkeypatch.chdir(tiny_model_dir)  # "my_handler:handle" is found relative to the folder
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    theirs.mkdir()
    args = flags(tiny_model_dir, handler) + ["--archive-format", archive_format]
    subprocess.run([TMA, *args, "--export-path", str(theirs)], check=True, capture_output=True)
    made = archive(
        "tiny", "1.0", handler,
        model_file=tiny_model_dir / "model.py", serialized_file=tiny_model_dir / "tiny.pth",
        extra_files=f"{tiny_model_dir / 'index_to_name.json'},{tiny_model_dir / 'assets'}",
        requirements_file=tiny_model_dir / "requirements.txt",
        config_file=tiny_model_dir / "model-config.yaml",
        export_path=ours, archive_format=archive_format,
    )
    their_path = theirs / f"tiny{SUFFIX[archive_format]}"
    assert made == ours / their_path.name
    assert member_names(made) == member_names(their_path)

    their_archive, our_archive = open_archive(their_path), open_archive(made)
    assert comparable(our_archive.manifest) == comparable(their_archive.manifest)
    assert files(our_archive.path) == files(their_archive.path)


def files(root: Path) -> dict[str, bytes]:
    """An unpacked archive's files, less the manifest (whose bytes hold a time stamp)."""
    return {name: data for name, data in tree(root).items() if name != MANIFEST_PATH}


@needs_tma
def test_reads_an_archive_made_by_torch_model_archiver(tiny_model_dir, tmp_path):
    subprocess.run([TMA, *flags(tiny_model_dir), "--export-path", str(tmp_path)],
                   check=True, capture_output=True)
    opened = open_archive(tmp_path / "tiny.mar")
    assert opened.model_name == "tiny"
    assert opened.version == "1.0"
    assert opened.handler == "image_classifier"
    assert opened.manifest["runtime"] == "python"
    assert opened.manifest["archiverVersion"] == "0.12.0"
    assert opened.file("serializedFile").read_bytes() == (tiny_model_dir / "tiny.pth").read_bytes()
    assert opened.file("modelFile").read_text() == (tiny_model_dir / "model.py").read_text()
    assert opened.file("configFile").name == "model-config.yaml"
    assert (opened.path / "vocab" / "words.txt").read_text() == "a\nb\n"
    assert not (opened.path / "__pycache__").exists()
    assert not (opened.path / ".git").exists()


@pytest.mark.parametrize("archive_format", list(SUFFIX))
def test_every_format_round_trips(tiny_model_dir, tmp_path, archive_format):
    made = archive("tiny", "2.5", "image_classifier", model_file=tiny_model_dir / "model.py",
                   serialized_file=tiny_model_dir / "tiny.pth",
                   extra_files=[tiny_model_dir / "index_to_name.json"],
                   export_path=tmp_path, archive_format=archive_format)
    opened = open_archive(made)
    assert (opened.model_name, opened.version) == ("tiny", "2.5")
    assert set(tree(opened.path)) == {"model.py", "tiny.pth", "index_to_name.json", MANIFEST_PATH}
    assert opened.file("serializedFile").read_bytes() == (tiny_model_dir / "tiny.pth").read_bytes()
    if archive_format == "zip-store":
        assert {i.compress_type for i in zipfile.ZipFile(made).infolist()} == {zipfile.ZIP_STORED}


def test_an_archive_is_unpacked_once(tiny_model_dir, tmp_path):
    made = archive("tiny", "1.0", "image_classifier",
                   serialized_file=tiny_model_dir / "tiny.pth", export_path=tmp_path)
    first = open_archive(made)
    (first.path / "marker").write_text("kept")
    copy = shutil.copy(made, tmp_path / "renamed.mar")
    again = open_archive(copy)
    assert again.path == first.path
    assert (again.path / "marker").read_text() == "kept"


def test_force_overwrites_and_progress_reaches_the_total(tiny_model_dir, tmp_path):
    seen = []
    archive("tiny", "1.0", "image_classifier", serialized_file=tiny_model_dir / "tiny.pth",
            export_path=tmp_path)
    with pytest.raises(ArchiveError, match="already exists.*--force"):
        archive("tiny", "1.0", "image_classifier", export_path=tmp_path)
    archive("tiny", "2.0", "image_classifier", serialized_file=tiny_model_dir / "tiny.pth",
            export_path=tmp_path, force=True, progress=lambda done, total: seen.append((done, total)))
    size = (tiny_model_dir / "tiny.pth").stat().st_size
    assert seen[-1] == (size, size)
    assert open_archive(tmp_path / "tiny.mar").version == "2.0"


# Hostile archives: each is refused, and nothing appears outside the cache's own folder.

def _zip(path: Path, members: dict) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MANIFEST_PATH, json.dumps({"model": {"modelName": "x", "handler": "h"}}))
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _symlink_zip(path: Path) -> Path:
    _zip(path, {})
    with zipfile.ZipFile(path, "a") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    return path


def _tar(path: Path, build) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        data = json.dumps({"model": {"modelName": "x", "handler": "h"}}).encode()
        info = tarfile.TarInfo(f"x/{MANIFEST_PATH}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        build(tar)
    return path


def _tar_member(name, data=b"pwned", kind=tarfile.REGTYPE, linkname=""):
    def build(tar):
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.size = kind, linkname, len(data)
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return build


def _zeros_tar(tar):
    size = 300 * 2**20
    info = tarfile.TarInfo("x/zeros.bin")
    info.size = size
    tar.addfile(info, io.BytesIO(bytes(size)))


HOSTILE = {
    "dotdot.mar": (lambda p: _zip(p, {"../../escaped.txt": "pwned"}), "unsafe path"),
    "absolute.mar": (lambda p: _zip(p, {"/tmp/nbserve-absolute.txt": "pwned"}), "unsafe path"),
    "symlink.mar": (_symlink_zip, "symbolic link"),
    "bomb.mar": (lambda p: _zip(p, {"zeros.bin": bytes(300 * 2**20)}), "zip bomb"),
    "dotdot.tar.gz": (lambda p: _tar(p, _tar_member("../../escaped.txt")), "unsafe path"),
    "symlink.tar.gz": (lambda p: _tar(p, _tar_member("x/link", b"", tarfile.SYMTYPE, "/etc")),
                       "link or special file"),
    "hardlink.tar.gz": (lambda p: _tar(p, _tar_member("x/hl", b"", tarfile.LNKTYPE, "/etc/passwd")),
                        "link or special file"),
    "bomb.tar.gz": (lambda p: _tar(p, _zeros_tar), "zip bomb"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_archives_are_refused_and_write_nothing(tmp_path, name):
    make, message = HOSTILE[name]
    store = tmp_path / "deep" / "store"
    store.mkdir(parents=True)
    hostile = make(store / name)
    before = tree(tmp_path)
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(ArchiveError, match=message):
        open_archive(hostile, cache_dir=cache)
    assert tree(tmp_path) == before
    assert list(cache.iterdir()) == []
    assert not Path("/tmp/nbserve-absolute.txt").exists()


def _folders_tar(path: Path, count: int) -> Path:
    def build(tar):
        for i in range(count):
            info = tarfile.TarInfo(f"x/d{i}")
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
    return _tar(path, build)


def test_folders_count_against_the_member_limit(tmp_path, monkeypatch):
    """A small .tar.gz of empty folders (120,003 of them in 551 KiB) is refused at the member
    limit, before it has made them all."""
    import importlib

    monkeypatch.setattr(importlib.import_module("nbserve.store.cache"), "MAX_MEMBERS", 1000)
    folders = _folders_tar(tmp_path / "folders.tar.gz", 1200)
    cache = tmp_path / "cache"
    with pytest.raises(ArchiveError, match="more than 1000 members"):
        open_archive(folders, cache_dir=cache)
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("kind", ["mar", "tar.gz"])
def test_a_member_that_is_a_file_and_a_folder_is_the_archives_error(tmp_path, kind):
    """``a`` then ``a/b``: a 400 that names the member, and no cache path in the message."""
    path = tmp_path / f"both.{kind}"
    if kind == "mar":
        _zip(path, {"a": "file", "a/b": "inside"})
    else:
        _tar(path, lambda tar: [_tar_member(name)(tar) for name in ("x/a", "x/a/b")])
    cache = tmp_path / "cache"
    with pytest.raises(ArchiveError) as refused:
        open_archive(path, cache_dir=cache)
    assert refused.value.status == 400 and re.search(r"at member '(x/)?a'", str(refused.value))
    assert str(cache) not in str(refused.value) and list(cache.iterdir()) == []


def test_the_size_limit_holds_whatever_the_ratio(tiny_model_dir, tmp_path):
    made = archive("tiny", "1.0", "image_classifier",
                   serialized_file=tiny_model_dir / "tiny.pth", export_path=tmp_path)
    with pytest.raises(ArchiveError, match="more than 100 bytes"):
        open_archive(made, cache_dir=tmp_path / "cache", max_unpacked_bytes=100)


@pytest.mark.parametrize("content, message", [
    (b"not an archive at all", "neither a .mar"),
    (None, "not found"),
])
def test_what_is_not_an_archive_is_named(tmp_path, content, message):
    path = tmp_path / "thing.mar"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ArchiveError, match=message):
        open_archive(path)


def test_an_archive_without_a_manifest_is_refused(tmp_path):
    path = tmp_path / "plain.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("weights.pth", b"\0")
    with pytest.raises(ArchiveError, match="no MAR-INF/MANIFEST.json"):
        open_archive(path)


def _manifest_zip(path: Path, model: dict) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(MANIFEST_PATH, json.dumps({"model": {"modelName": "x", "handler": "h.py",
                                                         "modelVersion": "1.0", **model}}))
        zf.writestr("h.py", "def handle(data, context):\n    return data\n")
    return path


@pytest.mark.parametrize("model,message", [
    ({"serializedFile": "/etc/passwd"}, "points outside"),
    ({"modelFile": "../../model.py"}, "points outside"),
    ({"handler": "../evil.py:handle"}, "points outside"),
    ({"configFile": "sub/../../x.yaml"}, "points outside"),
    ({"modelVersion": '1.0"} 1\nevil_metric{a="'}, "Invalid model version"),
])
def test_manifests_that_point_outside_or_carry_no_version_are_refused(tmp_path, model, message):
    with pytest.raises(ArchiveError, match=message):
        open_archive(_manifest_zip(tmp_path / "m.mar", model), cache_dir=tmp_path / "cache")


def test_a_cached_folder_someone_else_may_write_is_not_used(tmp_path):
    made = _manifest_zip(tmp_path / "m.mar", {})
    opened = open_archive(made, cache_dir=tmp_path / "cache")
    opened.path.chmod(0o777)
    with pytest.raises(ArchiveError, match="not private to this user"):
        open_archive(made, cache_dir=tmp_path / "cache")


def test_the_cache_drops_the_least_recently_used_archive_no_one_holds(tmp_path):
    cache = tmp_path / "cache"
    archives = [_manifest_zip(tmp_path / f"{i}.mar", {"modelVersion": f"{i}.0"}) for i in range(3)]
    held = open_archive(archives[0], cache_dir=cache, max_cache_bytes=1)
    dropped = open_archive(archives[1], cache_dir=cache, max_cache_bytes=1).path
    open_archive(archives[2], cache_dir=cache, max_cache_bytes=1)
    assert held.path.is_dir()  # held by this process: stays, though least recently used
    assert not dropped.is_dir()  # nothing holds it any more
    assert held.manifest["model"]["modelVersion"] == "0.0"
