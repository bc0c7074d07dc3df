"""nbserve's default handlers answer what TorchServe's answer, for the same archive and input."""

import io
import json

import pytest
from PIL import Image

from nbserve.errors import InferenceError
from tests.support import archives
from tests.support.helpers import assert_same_answer

PHOTOS = ["cat.jpg", "astronaut.jpg", "coffee.png", "noise.jpg"]


@pytest.fixture(scope="module")
def served(engine, torchserve):
    """Register an archive with both servers; returns its name."""
    def serve(mar):
        name = torchserve.register(mar)
        engine.register(mar, replace=True)
        return name
    return serve


def compare(engine, torchserve, name, inputs, tolerance=1e-5):
    for body in inputs:
        status, theirs = torchserve.predict(name, body)
        assert status == 200, theirs
        assert_same_answer(engine.predict(name, body), theirs, tolerance)


def test_image_classifier_eager(engine, torchserve, served, classifier_mar, photos):
    name = served(classifier_mar)
    compare(engine, torchserve, name, [photos[p] for p in PHOTOS])
    answer = engine.predict(name, photos["cat.jpg"])
    assert len(answer) == 5 and all(isinstance(k, str) and not k.isdigit() for k in answer)


def test_image_classifier_torchscript(engine, torchserve, served, tmp_path_factory, photos):
    name = served(archives.scripted_classifier(tmp_path_factory.mktemp("scripted")))
    compare(engine, torchserve, name, [photos[p] for p in PHOTOS])


def test_image_segmenter(engine, torchserve, served, tmp_path_factory, photos):
    name = served(archives.segmenter(tmp_path_factory.mktemp("segmenter")))
    compare(engine, torchserve, name, [photos["cat.jpg"]], tolerance=1e-4)
    answer = engine.predict(name, photos["cat.jpg"])
    assert (len(answer), len(answer[0]), len(answer[0][0])) == (224, 224, 2)


def test_object_detector(engine, torchserve, served, tmp_path_factory, photos):
    name = served(archives.detector(tmp_path_factory.mktemp("detector")))
    compare(engine, torchserve, name, [photos["cat.jpg"], photos["coffee.png"]], tolerance=1e-3)
    detections = engine.predict(name, photos["cat.jpg"])
    assert detections and set(detections[0]) == {"thing", "score"}


def test_text_classifier(engine, torchserve, served, tmp_path_factory):
    name = served(archives.text(tmp_path_factory.mktemp("text")))
    texts = [b"The movie was GREAT!", b"I don't like it", b"<b>boring</b> film, a bad plot"]
    compare(engine, torchserve, name, texts)
    assert set(engine.predict(name, "i loved the film")) == {"neg", "neutral", "pos"}


@pytest.mark.parametrize("photo", ["camera-gray.png", "astronaut-rgba.png", "coffee-palette.gif"])
def test_images_in_any_mode_are_answered_where_torchserve_fails(
        engine, torchserve, served, classifier_mar, photos, photo):
    name = served(classifier_mar)
    status, body = torchserve.predict(name, photos[photo])
    assert (status, body["message"]) == (503, "Prediction failed")  # TorchServe's weakness

    image = Image.open(io.BytesIO(photos[photo]))
    if image.mode in ("RGBA", "P") and (image.mode == "RGBA" or "transparency" in image.info):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        rgb = background
    else:
        rgb = image.convert("RGB")
    as_rgb = io.BytesIO()
    rgb.save(as_rgb, "PNG")
    assert engine.predict(name, photos[photo]) == engine.predict(name, as_rgb.getvalue())


@pytest.mark.parametrize("kind", ["empty", "text", "truncated.jpg"])
def test_what_is_not_an_image_is_a_400_naming_the_problem(engine, classifier_mar, photos, kind):
    engine.register(classifier_mar, replace=True)
    with pytest.raises(InferenceError) as raised:
        engine.predict("resnet18", archives.not_images(photos)[kind])
    error = raised.value
    assert (error.status, error.stage, error.model_name) == (400, "preprocess", "resnet18")
    assert "resnet18" in str(error) and ("image" in str(error) or "empty" in str(error))


def test_text_classifier_explanations(engine, torchserve, served, tmp_path_factory):
    """captum's Layer Integrated Gradients over the embedding, as TorchServe answers them."""
    name = served(archives.text(tmp_path_factory.mktemp("text-explained")))
    text = b"The movie was GREAT, I loved it"
    status, raw = torchserve.request("inference", f"explanations/{name}", "POST", text,
                                     {"Content-Type": "text/plain"})
    assert status == 200, raw
    ours = engine.predict(name, text.decode(), headers={"explain": "True"})
    assert_same_answer(ours, json.loads(raw), tolerance=1e-4)
    assert ours["words"] == ["the", "movie", "was", "great", "i", "loved", "it"]
