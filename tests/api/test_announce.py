"""Announcement files: private folder and file, never written through a planted link."""

import os
import stat

import pytest

from nbserve.api import announce


def test_the_runtime_folder_is_made_private_and_the_file_readable_by_its_owner(tmp_path):
    runtime = tmp_path / "runtime" / "jupyter"
    path = announce.announce("k1", {"inference": "http://127.0.0.1:1"}, "s3cret", runtime)
    assert stat.S_IMODE(runtime.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [a.kernel_id for a in announce.announcements(runtime)] == ["k1"]
    announce.withdraw(path)


def test_a_planted_link_is_not_followed(tmp_path):
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    planted = runtime / f".nbserve-kernel-k2.json.{os.getpid()}.tmp"
    planted.symlink_to(victim)
    path = announce.announce("k2", {}, "s3cret", runtime)
    assert victim.read_text() == "untouched"
    assert not path.is_symlink() and "s3cret" in path.read_text()
    announce.withdraw(path)


def test_a_folder_others_may_write_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(PermissionError, match="not private"):
        announce.announce("k3", {}, "s3cret", shared)
    assert list(shared.iterdir()) == []


def _planted(runtime, kernel_id: str, mode: int):
    """An announcement as a kernel writes it, then given ``mode``."""
    path = announce.announce(kernel_id, {"inference": "http://127.0.0.1:9"}, "theirs", runtime)
    path.chmod(mode)
    return path


def test_announcements_others_could_have_written_are_not_read(tmp_path):
    """A file others may read or write, a link, or another user's file names no kernel the
    extension would forward to."""
    runtime = tmp_path / "runtime"
    own = announce.announce("mine", {"inference": "http://127.0.0.1:1"}, "s3cret", runtime)
    _planted(runtime, "loose", 0o644)
    _planted(runtime, "writable", 0o622)
    target = _planted(tmp_path / "elsewhere", "k", 0o600)
    (runtime / "nbserve-kernel-linked.json").symlink_to(target)
    if os.getuid() == 0:  # as root, a file can be given to another user
        os.chown(_planted(runtime, "foreign", 0o600), 12345, 12345)
    assert [a.kernel_id for a in announce.announcements(runtime)] == ["mine"]
    announce.withdraw(own)
