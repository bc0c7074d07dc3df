"""Predictions and the status table, as HTML for Jupyter and as text for terminals and nbconvert."""

import io

from PIL import Image

from nbserve.notebook.display import (
    ServingStatus,
    prediction_html,
    prediction_text,
    shown,
    thumbnail_png,
)


def png(size=(400, 300)):
    out = io.BytesIO()
    Image.new("L", size, 128).save(out, "PNG")
    return out.getvalue()


def test_scores_show_as_bars_beside_a_thumbnail_and_as_a_text_chart():
    scores = {"tabby": 0.6, "tiger_cat": 0.3, "<script>": 0.1}
    thumbnail = thumbnail_png(png())
    assert max(Image.open(io.BytesIO(thumbnail)).size) == 160
    rich = prediction_html(scores, thumbnail)
    assert rich.count("<tr>") == 3 and "data:image/png;base64," in rich
    assert "&lt;script&gt;" in rich and "<script>" not in rich
    lines = prediction_text(scores).splitlines()
    # Probabilities are drawn on their own scale: p = 0.6 fills 0.6 of the bar.
    assert lines[0].startswith("tabby") and lines[0].count("█") == 14 and lines[1].count("█") == 7
    assert 'width:60.0%' in rich and "Low confidence" not in rich


def test_probabilities_that_prefer_no_class_say_so_and_logits_scale_to_the_top():
    untrained = {f"class{i}": 0.003 - i * 0.0001 for i in range(5)}
    text = prediction_text(untrained)
    assert all(line.endswith("  ▏") for line in text.splitlines()[:5])  # slivers, not bars
    assert text.splitlines()[-1].startswith("Low confidence: the top class has p = 0.003.")
    assert "nbserve-low-confidence" in prediction_html(untrained)
    logits = {"a": 8.0, "b": 4.0}
    assert [line.count("█") for line in prediction_text(logits).splitlines()] == [24, 12]
    assert "Low confidence" not in prediction_text(logits)


def test_other_answers_show_as_json():
    detections = [{"person": [1.0, 2.0, 3.0, 4.0], "score": 0.9}]
    assert '"person"' in prediction_text(detections) and "<pre>" in prediction_html(detections)
    assert prediction_text(b"\x00\x01") == "<2 bytes>"
    assert thumbnail_png(b"not an image") is None


def test_shown_values_equal_the_json_answer_and_keep_their_type():
    scores = shown({"a": 0.5}, None)
    assert scores == {"a": 0.5} and isinstance(scores, dict)
    rich = scores._repr_html_()
    assert "nbserve-scores" in rich and ">a<" in rich and "0.5000" in rich
    assert shown([1, 2]) == [1, 2] and isinstance(shown([1, 2]), list)
    assert shown("text") == "text" and type(shown("text")) is str


def test_status_table_reads_the_same_in_text_and_html(engine, classifier_mar):
    engine.register(classifier_mar, model_name="display_model")
    try:
        status = ServingStatus.of(engine, {"inference": "http://127.0.0.1:8080"})
        row = next(r for r in status.rows if r["model"] == "display_model")
        assert row["workers"] == "1/1" and row["device"] == "cpu" and row["p50 / p99 ms"] == "-"
        assert row["batch size"] == "1 (max 4)"
        assert row["predictions URL"] == "http://127.0.0.1:8080/predictions/display_model"
        text = str(status)
        assert "display_model" in text and text.splitlines()[1].startswith("-----")
        assert ">p50 / p99 ms</th>" in status._repr_html_()
        assert text.splitlines()[0].split()[:3] == ["model", "predictions", "URL"]
    finally:
        engine.unregister("display_model")
    assert "Nothing is being served" in str(ServingStatus([], {}))


def test_a_model_that_failed_to_load_shows_why(engine, classifier_mar, tmp_path):
    engine.record_failure("broken", tmp_path / "broken.mar", ImportError("no such package"))
    engine.register(classifier_mar, model_name="served_model")
    try:
        status = ServingStatus.of(engine, {"inference": "http://127.0.0.1:8080"},
                                  keys_at={"here": "keys['inference']"})
        row = next(r for r in status.rows if r["model"] == "broken")
        assert row["workers"] == "failed to load"
        assert row["predictions URL"] == "ImportError: no such package"
        assert status.curl.startswith("!curl http://127.0.0.1:8080/predictions/")
        assert status.curl.endswith("-T INPUT -H \"Authorization: Bearer {keys['inference']}\"")
        assert "failed to load" in str(status) and "keys[&#x27;inference&#x27;]" in status._repr_html_()
    finally:
        engine.unregister("served_model")
        engine.failures.clear()
