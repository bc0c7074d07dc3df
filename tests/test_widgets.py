"""The upload widget and the archive progress bar, driven as the browser drives them."""

import pytest

import archives
from nbserve.cli import PROGRESS_THRESHOLD
from nbserve.errors import ModelNotFound
from nbserve.widgets import ArchiveProgress, PredictionUpload


def upload(widget, files):
    """Set the FileUpload's value as the browser's front end does: bytes and metadata per file."""
    widget.upload.set_state({"value": [
        {"name": name, "type": "application/octet-stream", "size": len(data),
         "content": memoryview(data), "last_modified": 0} for name, data in files.items()]})


def test_each_upload_shows_beside_its_answer_and_a_bad_file_fails_alone(engine, tmp_path, photos):
    engine.register(archives.classifier(tmp_path / "c"), model_name="upload_model")
    try:
        widget = PredictionUpload("upload_model", engine=engine)
        upload(widget, {"cat.jpg": photos["cat.jpg"], "empty.png": b"",
                        "gray.png": photos["camera-gray.png"]})
        widget.wait(60)
        rows = [row.value for row in widget.results.children]
        expected = engine.predict("upload_model", photos["cat.jpg"])
        assert "cat.jpg" in rows[0] and next(iter(expected)) in rows[0] and "<img" in rows[0]
        assert "empty.png" in rows[1] and "nbserve-error" in rows[1] and "empty" in rows[1]
        assert "gray.png" in rows[2] and "nbserve-scores" in rows[2]
    finally:
        engine.unregister("upload_model")


def test_an_unknown_model_fails_when_the_widget_is_made(engine):
    with pytest.raises(ModelNotFound):
        PredictionUpload("no_such_model", engine=engine)


def test_the_progress_bar_shows_only_for_big_archives(capsys):
    small = ArchiveProgress("Archiving small")
    small(10, 100)
    assert not small.shown
    big = ArchiveProgress("Archiving big")
    big(PROGRESS_THRESHOLD // 2, PROGRESS_THRESHOLD)
    assert big.shown and big.bar.value == 0.5 and big.text.value == "32/64 MiB"
    big.close()
    assert big.bar.bar_style == "success"
