"""The upload widget and the archive progress bar, driven as the browser drives them."""

import pytest

from nbserve.errors import ModelNotFound
from nbserve.notebook.widgets import PredictionUpload
from nbserve.progress import ARCHIVE_THRESHOLD, Progress
from tests.support import archives


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
    from tqdm.notebook import tqdm  # what tqdm.auto draws in a kernel

    small = Progress.archive("Archiving small", tqdm_class=tqdm)
    small(10, 100)
    assert not small.shown
    big = Progress.archive("Archiving big", tqdm_class=tqdm)
    big(ARCHIVE_THRESHOLD // 2, ARCHIVE_THRESHOLD)
    label, bar, figures = big.bar.container.children
    assert big.shown and "Archiving" in label.value and bar.max == ARCHIVE_THRESHOLD
    big(ARCHIVE_THRESHOLD, ARCHIVE_THRESHOLD)
    big.close()
    assert bar.value == ARCHIVE_THRESHOLD and bar.bar_style == "success"
    assert "64.0M/64.0M" in figures.value