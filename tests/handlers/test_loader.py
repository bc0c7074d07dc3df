"""Custom handlers in every form TorchServe accepts, and model files that must not load."""

import json
import os
import pickle
import subprocess
import sys
import textwrap

import pytest

from nbserve.handlers.loader import HandlerLoadError
from nbserve.serving.engine import Engine
from nbserve.store.archiver import archive
from tests.support import archives
from tests.support.helpers import assert_same_answer


@pytest.fixture(scope="module")
def custom(tmp_path_factory, classifier_mar):
    return archives.custom_handlers(tmp_path_factory.mktemp("custom"), classifier_mar.parent.parent)


@pytest.mark.parametrize("form", ["function", "file_function", "ts_class"])
def test_custom_handlers_answer_as_torchserve(engine, torchserve, custom, photos, form):
    mar = custom[form]
    name = torchserve.register(mar, batch_size=4, max_batch_delay=10)
    engine.register(mar, replace=True, batch_size=4)
    body = photos["cat.jpg"] if form == "ts_class" else b"hello nbserve"
    headers = {"x-test": "forwarded"}
    status, theirs = torchserve.predict(name, body, headers)
    assert status == 200, theirs
    ours = engine.predict(name, body, headers=headers)
    if form == "function":
        assert ours["header"] == theirs["header"] == "forwarded"
        # TorchServe matches header names exactly; nbserve, as HTTP says, in any case.
        assert (ours.pop("header_any_case"), theirs.pop("header_any_case")) == ("forwarded", None)
    if isinstance(theirs, bytes):  # a str answer is sent as its text, not as JSON
        assert ours.encode() == theirs
    else:
        assert_same_answer(ours, theirs)


def test_ts_imports_give_nbserve_classes(engine, custom):
    version = engine.register(custom["ts_class"], replace=True)
    from nbserve.handlers.image_classifier import ImageClassifier

    handler = version.workers[0].entry.instance
    assert isinstance(handler, ImageClassifier)
    assert type(handler).__name__ == "TopThree"


def test_ts_imports_work_without_torchserve(custom, photos, tmp_path):
    """In a process where TorchServe cannot be imported, the same handler loads and answers."""
    (tmp_path / "cat.jpg").write_bytes(photos["cat.jpg"])
    script = textwrap.dedent(f"""
        import json, sys

        class NoTorchServe:
            def find_spec(self, name, path=None, target=None):
                if name == "ts" or name.startswith("ts."):
                    raise ModuleNotFoundError(f"No module named {{name!r}}")

        sys.meta_path.insert(0, NoTorchServe())
        from nbserve.serving.engine import Engine
        with Engine() as engine:
            engine.register({str(custom["ts_class"])!r})
            answer = engine.predict("topthree", open({str(tmp_path / "cat.jpg")!r}, "rb").read())
        print(json.dumps(answer))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "NBSERVE_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.splitlines()[-1])
    assert answer["handler"] == "TopThree" and len(answer["top"]) == 3


def test_two_models_with_the_same_file_names_do_not_collide(tmp_path):
    """Each archive's handler.py is its own module, though both are called handler.py."""
    paths = []
    for word in ("first", "second"):
        folder = tmp_path / word
        folder.mkdir()
        (folder / "handler.py").write_text(
            f"def handle(data, context):\n    return None if data is None else [{word!r}] * len(data)\n")
        paths.append(archive(word, "1.0", str(folder / "handler.py"), export_path=tmp_path))
    with Engine() as engine:
        for path in paths:
            engine.register(path)
        assert engine.predict("first", b"x") == "first"
        assert engine.predict("second", b"x") == "second"


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {_Exploit.marker}",))


def test_a_malicious_state_dict_is_refused_and_never_runs(tiny_model_dir, tmp_path):
    _Exploit.marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"fc.weight": _Exploit()}, f)
    mar = archive("evil", "1.0", "base_handler", model_file=tiny_model_dir / "model.py",
                  serialized_file=tmp_path / "evil.pth", export_path=tmp_path)
    with Engine() as engine, pytest.raises(RuntimeError, match="Refusing to load evil.pth"):
        engine.register(mar)
    assert not _Exploit.marker.exists()


@pytest.mark.parametrize("handler, message", [
    ("missing_file.py", "nor a file in the archive"),
    ("dali_image_classifier", "not one nbserve runs"),
])
def test_handlers_that_cannot_load_say_why(tmp_path, handler, message):
    folder = tmp_path / "h"
    folder.mkdir()
    (folder / "missing_file.py").write_text("x = 1\n")
    mar = archive("broken", "1.0", str(folder / "missing_file.py"), export_path=tmp_path)
    with Engine() as engine, pytest.raises(HandlerLoadError, match=message):
        engine.register(mar, handler=handler if handler != "missing_file.py" else "absent.py")


def test_a_module_with_two_classes_and_no_handle_is_refused(tmp_path):
    (tmp_path / "two.py").write_text("class A:\n    pass\n\n\nclass B:\n    pass\n")
    mar = archive("two", "1.0", str(tmp_path / "two.py"), export_path=tmp_path / "store")
    with Engine() as engine, pytest.raises(HandlerLoadError, match="defines 2 classes"):
        engine.register(mar)


def test_base_handler_serves_a_tensor_model(tiny_model_dir, tmp_path):
    mar = archive("tiny", "1.0", "base_handler", model_file=tiny_model_dir / "model.py",
                  serialized_file=tiny_model_dir / "tiny.pth", export_path=tmp_path)
    with Engine() as engine:
        engine.register(mar)
        answer = engine.predict("tiny", json.loads("[1.0, 2.0, 3.0, 4.0]"))
    import torch

    namespace: dict = {}
    exec((tiny_model_dir / "model.py").read_text(), namespace)
    model = namespace["TinyNet"]()
    model.load_state_dict(torch.load(tiny_model_dir / "tiny.pth", weights_only=True))
    expected = model(torch.tensor([[1.0, 2.0, 3.0, 4.0]])).tolist()[0]
    assert answer == pytest.approx(expected, abs=1e-6)  # the archive's own weights, run


@pytest.mark.parametrize("pt2", ["compile:\n    enable: true\n    backend: eager\n",
                                 "backend: eager\n", "eager\n"])
def test_pt2_compiles_in_any_of_torchserves_forms(server_factory, tiny_model_dir, tmp_path, pt2):
    import json

    import torch

    from nbserve.store.archiver import archive

    config = tmp_path / "model-config.yaml"
    config.write_text("pt2:\n  " + pt2.replace("\n    ", "\n      ").replace("\n", "\n  ").rstrip() + "\n")
    made = archive("tiny", "1.0", "base_handler", model_file=tiny_model_dir / "model.py",
                   serialized_file=tiny_model_dir / "tiny.pth", config_file=config,
                   export_path=tmp_path)
    engine, _, clients = server_factory()
    version = engine.register(made)
    handler = version.workers[0].entry.instance
    assert isinstance(handler.model, torch._dynamo.eval_frame.OptimizedModule)
    status, answer = clients["inference"].json("POST", "/predictions/tiny", json.dumps([1.0, 2.0, 3.0, 4.0]),
                                               {"Content-Type": "application/json"})
    expected = handler.model._orig_mod(torch.tensor([[1.0, 2, 3, 4]])).tolist()[0]
    assert status == 200 and answer == pytest.approx(expected, abs=1e-5)


def test_pt2_export_is_refused_with_a_message(tiny_model_dir, tmp_path):
    from nbserve.serving.engine import Engine
    from nbserve.store.archiver import archive

    config = tmp_path / "model-config.yaml"
    config.write_text("pt2:\n  export:\n    aot_compile: true\n")
    made = archive("tiny", "1.0", "base_handler", model_file=tiny_model_dir / "model.py",
                   serialized_file=tiny_model_dir / "tiny.pth", config_file=config,
                   export_path=tmp_path)
    with Engine() as engine, pytest.raises(RuntimeError, match="pt2.export"):
        engine.register(made)
