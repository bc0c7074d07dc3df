"""Model archives the tests serve: small seeded torchvision models, one per default handler, and
custom handlers of each form TorchServe accepts. Made by the real torch-model-archiver when it
is installed (nbserve's own archiver otherwise, which makes the same archive)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

from nbserve.store.archiver import archive

REPO = Path(__file__).parents[2]
IMAGENET_LABELS = REPO / "examples" / "densenet161" / "index_to_name.json"


def make_archive(folder: Path, name: str, handler: str, **files) -> Path:
    """Archive ``folder``'s files; ``files`` maps archiver flags to file names in ``folder``."""
    flags = {"model_file": "--model-file", "serialized_file": "--serialized-file",
             "extra_files": "--extra-files", "config_file": "--config-file"}
    store = folder / "store"
    store.mkdir(exist_ok=True)
    if shutil.which("torch-model-archiver"):
        args = ["torch-model-archiver", "--model-name", name, "--version", "1.0",
                "--handler", handler, "--export-path", str(store), "--force"]
        for key, value in files.items():
            args += [flags[key], value]
        subprocess.run(args, check=True, capture_output=True, cwd=folder)
        return store / f"{name}.mar"
    resolved = {k: ",".join(str(folder / v) for v in value.split(",")) for k, value in files.items()}
    handler_path = str(folder / handler) if (folder / handler.split(":")[0]).exists() else handler
    return archive(name, "1.0", handler_path, export_path=store, force=True, **resolved)


CLASSIFIER_PY = '''\
from torchvision.models.resnet import BasicBlock, ResNet


class ImageClassifier(ResNet):
    def __init__(self):
        super().__init__(BasicBlock, [2, 2, 2, 2])
'''


def classifier(folder: Path) -> Path:
    """resnet18, eager (model.py + state dict), with ImageNet's labels."""
    classifier_files(folder)
    return make_archive(folder, "resnet18", "image_classifier", model_file="model.py",
                        serialized_file="resnet18.pth", extra_files="index_to_name.json")


def classifier_files(folder: Path) -> None:
    """The classifier's ``model.py``, seeded ``resnet18.pth`` and ``index_to_name.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(CLASSIFIER_PY)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), folder / "resnet18.pth")
    shutil.copy(IMAGENET_LABELS, folder / "index_to_name.json")


HEADER_HANDLER_PY = '''\
from ts.torch_handler.image_classifier import ImageClassifier


class HeaderClassifier(ImageClassifier):
    """Names each request in a header of its answer, through the context, as handlers do."""

    def postprocess(self, data):
        for index, request_id in self.context.request_ids.items():
            self.context.set_response_header(index, "X-Request-Id", request_id)
        return super().postprocess(data)
'''


def header_classifier(folder: Path) -> Path:
    """The resnet18 classifier with a handler that subclasses TorchServe's ImageClassifier,
    changing only ``postprocess``, which sets a header through ``self.context``."""
    classifier_files(folder)
    (folder / "handler.py").write_text(HEADER_HANDLER_PY)
    return make_archive(folder, "headers", "handler.py", model_file="model.py",
                        serialized_file="resnet18.pth", extra_files="index_to_name.json")


def scripted_classifier(folder: Path) -> Path:
    """The same resnet18 as TorchScript, without a model file."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    torch.jit.script(model).save(str(folder / "resnet18.pt"))
    shutil.copy(IMAGENET_LABELS, folder / "index_to_name.json")
    return make_archive(folder, "resnet18_ts", "image_classifier",
                        serialized_file="resnet18.pt", extra_files="index_to_name.json")


SEGMENTER_PY = '''\
import torch
import torchvision


class Segmenter(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=4)

    def forward(self, x):
        return self.net(x)
'''


def eager_files(folder: Path, model_py: str, class_name: str, weights: str) -> None:
    """``model.py`` and a seeded state dict of the class it defines, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(model_py)
    namespace: dict = {}
    exec(model_py, namespace)
    torch.manual_seed(0)
    torch.save(namespace[class_name]().state_dict(), folder / weights)


def segmenter(folder: Path) -> Path:
    eager_files(folder, SEGMENTER_PY, "Segmenter", "segmenter.pth")
    return make_archive(folder, "segmenter", "image_segmenter", model_file="model.py",
                        serialized_file="segmenter.pth")


DETECTOR_PY = '''\
import torch
import torchvision


class Detector(torch.nn.Module):
    def __init__(self):
        super().__init__()
        # Two classes (background and one): untrained scores sit near 0.5, so some boxes pass
        # the handler's threshold and the answers are not empty.
        self.net = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
            weights=None, weights_backbone=None, num_classes=2, box_score_thresh=0.0)

    def forward(self, images):
        return self.net(images)
'''


def detector(folder: Path) -> Path:
    eager_files(folder, DETECTOR_PY, "Detector", "detector.pth")
    (folder / "index_to_name.json").write_text(json.dumps({"0": "__background__", "1": "thing"}))
    return make_archive(folder, "detector", "object_detector", model_file="model.py",
                        serialized_file="detector.pth", extra_files="index_to_name.json")


TEXT_PY = '''\
from torch import nn


class TextClassificationModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.EmbeddingBag(64, 16)
        self.fc = nn.Linear(16, 3)

    def forward(self, text, offsets):
        return self.fc(self.embedding(text, offsets))
'''
TEXT_WORDS = ["the", "movie", "was", "great", "bad", "do", "not", "like", "it", "i", "loved",
              "plot", "a", "film", "boring"]


def text(folder: Path) -> Path:
    eager_files(folder, TEXT_PY, "TextClassificationModel", "text.pth")
    vocab = {w: i for i, w in enumerate(TEXT_WORDS)}
    bigrams = [f"{a} {b}" for a in TEXT_WORDS for b in TEXT_WORDS]
    vocab.update({b: len(TEXT_WORDS) + i % (64 - len(TEXT_WORDS)) for i, b in enumerate(bigrams)})
    torch.save(vocab, folder / "source_vocab.pt")
    (folder / "index_to_name.json").write_text(json.dumps({"0": "neg", "1": "neutral", "2": "pos"}))
    return make_archive(folder, "text", "text_classifier", model_file="model.py",
                        serialized_file="text.pth",
                        extra_files="index_to_name.json,source_vocab.pt")


FUNCTION_HANDLER = '''\
import json


def handle(data, context):
    if data is None:  # TorchServe calls handle(None, context) once, to initialise
        return None
    answers = []
    for i, row in enumerate(data):
        body = row.get("data") or row.get("body")
        answers.append({
            "length": len(body),
            "model": context.model_name,
            "batch_size": context.system_properties["batch_size"],
            "has_model_dir": bool(context.system_properties["model_dir"]),
            "header": {k.lower(): v for k, v in context.get_all_request_header(i).items()}.get("x-test"),
            "header_any_case": context.get_request_header(i, "X-TEST"),
        })
    return answers
'''

FILE_FUNCTION_HANDLER = '''\
def shout(data, context):
    if data is None:
        return None
    return [(row.get("data") or row.get("body")).decode().upper() for row in data]
'''

TS_CLASS_HANDLER = '''\
import torch
from ts.context import Context
from ts.torch_handler.image_classifier import ImageClassifier
from ts.utils.util import map_class_to_label


class TopThree(ImageClassifier):
    """A handler written for TorchServe: its imports are TorchServe's."""

    topk = 3

    def postprocess(self, data):
        probs, classes = torch.topk(torch.softmax(data, dim=1), self.topk, dim=1)
        labelled = map_class_to_label(probs.tolist(), self.mapping, classes.tolist())
        return [{"top": row, "handler": type(self).__name__} for row in labelled]
'''


def custom_handlers(folder: Path, classifier_folder: Path) -> dict[str, Path]:
    """Archives for a handle function, a file:function, and a class that imports ``ts``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "function_handler.py").write_text(FUNCTION_HANDLER)
    (folder / "shouting.py").write_text(FILE_FUNCTION_HANDLER)
    (folder / "top_three.py").write_text(TS_CLASS_HANDLER)
    for name in ("model.py", "resnet18.pth", "index_to_name.json"):
        shutil.copy(classifier_folder / name, folder / name)
    return {
        "function": make_archive(folder, "echo", "function_handler.py"),
        "file_function": make_archive(folder, "shout", "shouting:shout"),
        "ts_class": make_archive(folder, "topthree", "top_three.py", model_file="model.py",
                                 serialized_file="resnet18.pth", extra_files="index_to_name.json"),
    }


def photos() -> dict[str, bytes]:
    """Real photos from scikit-image, and images in the modes TorchServe's handlers refuse."""
    from skimage import data

    def encode(array_or_image, fmt, **kw) -> bytes:
        image = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
        buf = io.BytesIO()
        image.save(buf, fmt, **kw)
        return buf.getvalue()

    rgba = Image.fromarray(data.astronaut()).convert("RGBA")
    rgba.putalpha(200)
    return {
        "cat.jpg": encode(data.chelsea(), "JPEG", quality=90),
        "astronaut.jpg": encode(data.astronaut(), "JPEG", quality=90),
        "coffee.png": encode(data.coffee(), "PNG"),
        "camera-gray.png": encode(data.camera(), "PNG"),
        "astronaut-rgba.png": encode(rgba, "PNG"),
        "coffee-palette.gif": encode(Image.fromarray(data.coffee()).convert("P"), "GIF"),
        "noise.jpg": encode((np.random.RandomState(0).rand(240, 320, 3) * 255).astype("uint8"), "JPEG"),
    }



def not_images(photos_by_name: dict[str, bytes]) -> dict[str, bytes]:
    """Inputs an image handler cannot read: each must be answered 400, alone."""
    return {"empty": b"", "text": b"this is not an image",
            "truncated.jpg": photos_by_name["cat.jpg"][:2000]}


# A handler the tests steer through the request: {"sleep": s} waits, "boom" raises,
# {"status": 418} sets the response status. Answers carry the batch size and a tag.
CONTROLLED = '''\
import time

TAG = "{tag}"


def handle(data, context):
    if data is None:
        return None
    bodies = [row.get("body") for row in data]
    if "boom" in bodies:
        raise ValueError("boom was asked for")
    time.sleep(max([b.get("sleep", 0) for b in bodies if isinstance(b, dict)], default=0))
    for i, body in enumerate(bodies):
        if isinstance(body, dict) and "status" in body:
            context.set_response_status(body["status"], "as asked", i)
    return [{{"echo": body, "batch": len(data), "tag": TAG}} for body in bodies]
'''


def controlled(folder, tag="v1", name="ctl"):
    folder.mkdir(parents=True, exist_ok=True)
    handler = folder / f"controlled_{tag}.py"
    handler.write_text(CONTROLLED.format(tag=tag))
    return archive(name, "1.0", str(handler), export_path=folder, force=True)


# Handlers that do what TorchServe's examples do (examples/image_classifier/mnist, vgg_16,
# examples/micro_batching), written here.

DIGITS_PY = '''\
import torch
from torch import nn


class DigitNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 26 * 26, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))
'''

DIGITS_HANDLER_PY = '''\
from torchvision import transforms
from ts.torch_handler.image_classifier import ImageClassifier


class DigitClassifier(ImageClassifier):
    """28x28 grayscale digits: one-channel transforms of its own."""

    image_processing = transforms.Compose([transforms.ToTensor(),
                                           transforms.Normalize((0.5,), (0.25,))])

    def postprocess(self, data):
        return [{"digit": int(row.argmax()), "scores": row.tolist()} for row in data]
'''


def digits(folder: Path) -> Path:
    """A one-channel digit classifier whose handler brings its own transforms (as mnist)."""
    eager_files(folder, DIGITS_PY, "DigitNet", "digits.pth")
    (folder / "digits_handler.py").write_text(DIGITS_HANDLER_PY)
    return make_archive(folder, "digits", "digits_handler.py", model_file="model.py",
                        serialized_file="digits.pth")


BY_NAME_HANDLER_PY = '''\
import importlib
import json

import torch
from ts.torch_handler.base_handler import BaseHandler
from ts.utils.util import list_classes_from_module


class ByNameHandler(BaseHandler):
    """Loads its model module by name, which needs the model's folder on sys.path (as vgg_16)."""

    def preprocess(self, data):
        rows = [row.get("data") or row.get("body") for row in data]
        return torch.tensor([json.loads(r) if isinstance(r, (bytes, bytearray)) else r
                             for r in rows], dtype=torch.float32)

    def _load_pickled_model(self, model_dir, model_file, model_pt_path):
        module = importlib.import_module(model_file.split(".")[0])
        [model_class] = list_classes_from_module(module)
        model = model_class()
        model.load_state_dict(torch.load(model_pt_path, weights_only=True))
        return model
'''

NET_PY = '''\
import torch
from torch import nn


class Net(nn.Module):
    """{outputs} outputs."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, {outputs})

    def forward(self, x):
        return self.fc(x)
'''


def by_name(folder: Path, name: str, outputs: int) -> Path:
    """A handler that imports ``model`` by name, over a ``model.py`` whose ``Net`` has
    ``outputs`` outputs: two of these with other ``outputs`` must not share a module."""
    eager_files(folder, NET_PY.format(outputs=outputs), "Net", "net.pth")
    (folder / "by_name.py").write_text(BY_NAME_HANDLER_PY)
    return make_archive(folder, name, "by_name.py", model_file="model.py",
                        serialized_file="net.pth")


MICRO_BATCHING_HANDLER_PY = '''\
from ts.handler_utils.micro_batching import MicroBatching
from ts.torch_handler.image_classifier import ImageClassifier


class MicroBatchingClassifier(ImageClassifier):
    """Replaces its handle with MicroBatching, without calling super().__init__()."""

    def __init__(self):
        self.handle = MicroBatching(self)

    def initialize(self, context):
        super().initialize(context)
        settings = context.model_yaml_config.get("micro_batching", {})
        if settings.get("parallelism"):
            self.handle.parallelism = settings["parallelism"]
        self.handle.micro_batch_size = settings.get("micro_batch_size", 1)
'''

MICRO_BATCHING_YAML = """\
batchSize: 6
maxBatchDelay: 500
micro_batching:
  micro_batch_size: 2
  parallelism:
    preprocess: 2
    inference: 1
    postprocess: 2
"""


def micro_batching(folder: Path) -> Path:
    """resnet18 behind a MicroBatching handler, with its model-config.yaml settings."""
    classifier_files(folder)
    (folder / "mb_handler.py").write_text(MICRO_BATCHING_HANDLER_PY)
    (folder / "model-config.yaml").write_text(MICRO_BATCHING_YAML)
    return make_archive(folder, "micro", "mb_handler.py", model_file="model.py",
                        serialized_file="resnet18.pth", extra_files="index_to_name.json",
                        config_file="model-config.yaml")


DESCRIBED_HANDLER_PY = '''\
from ts.torch_handler.base_handler import BaseHandler


class DescribedHandler(BaseHandler):
    """No model: answers each request with its length, and describes itself."""

    def initialize(self, context):
        self.initialized = True

    def preprocess(self, data):
        return [row.get("data") or row.get("body") for row in data]

    def inference(self, data):
        return [len(item or b"") for item in data]

    def postprocess(self, data):
        return data

    def describe_handle(self):
        return {"data1": "1", "data2": "2"}
'''


def described(folder: Path) -> Path:
    """A handler whose ``describe_handle`` gives TorchServe's customized metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "described.py").write_text(DESCRIBED_HANDLER_PY)
    return make_archive(folder, "described", "described.py")


STREAMING_PY = '''\
import time

from {module} import send_intermediate_predict_response


def handle(data, context):
    if data is None:
        return None
    for i in range(4):
        send_intermediate_predict_response([f"part {i}; " for _ in data], context.request_ids,
                                           "Intermediate Prediction success", 200, context)
        time.sleep(0.2)
    return ["done" for _ in data]
'''


#: What the streaming handler sends, in order; the last is what it returns.
STREAMING_PARTS = ["part 0; ", "part 1; ", "part 2; ", "part 3; ", "done"]


def streaming(folder: Path, module: str = "ts.protocol.otf_message_handler") -> Path:
    """A handler that sends four parts 200 ms apart, then returns the fifth; it imports
    ``send_intermediate_predict_response`` from ``module`` (TorchServe has it in two)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "streaming.py").write_text(STREAMING_PY.replace("{module}", module))
    return make_archive(folder, "streaming", "streaming.py")


METERED_PY = '''\
from ts.metrics.dimension import Dimension
from ts.metrics.metric_type_enum import MetricTypes


class Metered:
    """Every kind of metric TorchServe's custom_metrics example adds, each way it adds them."""

    def initialize(self, context):
        metrics = context.metrics
        self.requests = metrics.add_metric_to_cache(
            metric_name="InferenceRequestCount", unit="count", dimension_names=[],
            metric_type=MetricTypes.COUNTER)
        metrics.add_metric_to_cache(metric_name="PreprocessCallCount", unit="count",
                                    dimension_names=["ModelName"], metric_type=MetricTypes.COUNTER)
        metrics.add_metric(name="InitializeCallCount", value=1, unit="count",
                           dimensions=[Dimension("ModelName", context.model_name),
                                       Dimension("Level", "Model")],
                           metric_type=MetricTypes.COUNTER)

    def handle(self, data, context):
        metrics = context.metrics
        self.requests.add_or_update(value=1, dimension_values=[])
        metrics.get_metric(metric_name="PreprocessCallCount", metric_type=MetricTypes.COUNTER
                           ).add_or_update(value=1, dimension_values=[context.model_name])
        metrics.add_size(name="SizeOfImage", value=2.5, idx=None, unit="kB")
        metrics.add_time(name="HandlerMethodTime", value=12.5, idx=None, unit="ms",
                         dimensions=[Dimension(name="MethodName", value="preprocess")],
                         metric_type=MetricTypes.GAUGE)
        metrics.add_counter(name="PostprocessCallCount", value=1, idx=None, dimensions=[])
        metrics.add_percent(name="ExamplePercentMetric", value=50, idx=None, dimensions=[],
                            metric_type=MetricTypes.HISTOGRAM)
        return [len(row.get("body") or b"") for row in data]
'''


def metered(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metered.py").write_text(METERED_PY)
    return make_archive(folder, "metered", "metered.py")


CRASHING_PY = '''\
import ctypes
import os
import sys
import time


class Answer:
    """An answer of this module's own class, which no server can read without importing it."""


def handle(data, context):
    """Answers its process id, or crashes the way the body asks."""
    if data is None:
        return None
    for row in data:
        body = bytes(row.get("data") or row.get("body"))
        print(f"handling {body.decode()}", file=sys.stderr, flush=True)
        if body == b"segfault":
            ctypes.string_at(0)
        elif body == b"exit":
            os._exit(1)
        elif body == b"hang":
            time.sleep(3600)
        elif body == b"object":
            return [Answer() for _ in data]
    return [os.getpid() for _ in data]
'''


def crashing(folder: Path) -> Path:
    """A handler that answers its pid, or segfaults, exits, hangs or answers an object of its
    own class when the body says so."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "crashing.py").write_text(CRASHING_PY)
    return make_archive(folder, "crashing", "crashing.py")


#: TorchServe's examples/stateful handler, with a dict for its LRU cache: a running sum per
#: sequence, kept by the worker that has the sequence, and which worker that is.
STATEFUL_PY = '''
import os
import time


class Summing:
    def initialize(self, context):
        self.context, self.sums = context, {}

    def handle(self, data, context):
        answers = []
        for i, row in enumerate(data):
            sequence_id = context.get_sequence_id(i)
            body = row.get("body")
            text = body.decode() if isinstance(body, (bytes, bytearray)) else str(body)
            if text.startswith("slow"):
                time.sleep(float(text[4:]))
                text = "0"
            self.sums[sequence_id] = self.sums.get(sequence_id, 0) + int(text)
            answers.append(f"{self.sums[sequence_id]} {os.getpid()} {id(self)} {len(data)}")
        return answers
'''


def stateful(tmp_path, **yaml):
    """TorchServe's sequence-batching example (examples/stateful), on two workers unless
    ``yaml`` says otherwise."""
    settings = {"minWorkers": 2, "maxWorkers": 2, "batchSize": 4, "sequenceBatching": "true",
                "sequenceMaxIdleMSec": 5000, "maxSequenceJobQueueSize": 10, **yaml}
    (tmp_path / "stateful.py").write_text(STATEFUL_PY)
    (tmp_path / "model-config.yaml").write_text(
        "".join(f"{key}: {value}\n" for key, value in settings.items()))
    return make_archive(tmp_path, "stateful", "stateful.py",
                        config_file="model-config.yaml")


#: A handler written to TorchServe's continuous-batching protocol (its vLLM and stateful
#: examples): each ``handle`` call is one step; a request asking for N words gets one per step,
#: each with the number of requests in that step, and ``ts_stream_next: true`` until its last.
CONTINUOUS_PY = '''
import time


class Counting:
    def initialize(self, context):
        self.left = {}

    def handle(self, data, context):
        answers = []
        for i, row in enumerate(data):
            request_id = context.get_request_id(i)
            if request_id not in self.left:  # joins: its body says how many words
                body = row.get("body")
                self.left[request_id] = int(body.decode() if isinstance(body, bytes) else body)
                if self.left[request_id] < 0:
                    raise ValueError("a negative count")
            self.left[request_id] -= 1
            answers.append(f"w{self.left[request_id]}/{len(data)} ")
            if self.left[request_id] > 0:
                context.set_response_header(i, "ts_stream_next", "true")
            else:
                del self.left[request_id]
        time.sleep(0.05)
        return answers
'''


def continuous(tmp_path) -> Path:
    (tmp_path / "counting.py").write_text(CONTINUOUS_PY)
    (tmp_path / "model-config.yaml").write_text("continuousBatching: true\nbatchSize: 4\n")
    return make_archive(tmp_path, "counting", "counting.py", config_file="model-config.yaml")
