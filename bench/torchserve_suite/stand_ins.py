"""Local stand-ins for what TorchServe's suite downloads or a partial mirror lacks: the same
model code with seeded weights, so a test that passes on TorchServe offline can pass on nbserve
too. Made once into a cache folder, whose ``sitecustomize.py`` answers the suite's downloads."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import torch
import torchvision.models as tv
from torchvision.models import detection, segmentation

#: download.pytorch.org/models/<name>: the torchvision builder whose keys the example's
#: model.py expects.
DOWNLOADS = {
    "alexnet-owt-7be5be79.pth": lambda: tv.alexnet(),
    "densenet161-8d451a50.pth": lambda: tv.densenet161(),
    "resnet152-394f9c45.pth": lambda: tv.resnet152(),
    "resnet18-f37072fd.pth": lambda: tv.resnet18(),
    "squeezenet1_1-b8a52dc0.pth": lambda: tv.squeezenet1_1(),
    "vgg16-397923af.pth": lambda: tv.vgg16(),
    "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth":
        lambda: detection.fasterrcnn_resnet50_fpn(weights_backbone=None),
    "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth":
        lambda: detection.maskrcnn_resnet50_fpn(weights_backbone=None),
    "deeplabv3_resnet101_coco-586e9e4e.pth":
        lambda: segmentation.deeplabv3_resnet101(weights_backbone=None, aux_loss=True),
    "fcn_resnet101_coco-7ecb50ca.pth":
        lambda: segmentation.fcn_resnet101(weights_backbone=None, aux_loss=True),
}
#: Weights a partial mirror lacks, made from the model code beside them.
MNIST = "examples/image_classifier/mnist"
STATEFUL = "examples/stateful"
#: Where the suite keeps a ready mnist.mar (also torchserve.pytorch.org/mar_files/mnist.mar).
MNIST_STORES = ("test/resources/models", "frontend/archive/src/test/resources/models")


def _seeded_state(build) -> dict:
    torch.manual_seed(0)
    return build().state_dict()


def _net(model_file: Path):
    spec = importlib.util.spec_from_file_location("stand_in_model", model_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Net


def _mnist_state(suite: Path) -> dict:
    """The mnist example's Net fitted to the example's ten digits (``test_data/<digit>.png``),
    which the suite's tests expect it to read right; a few seconds on a CPU."""
    from PIL import Image
    from torchvision import transforms

    torch.manual_seed(0)
    model = _net(suite / MNIST / "mnist.py")()
    prepare = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    digits = sorted((suite / MNIST / "test_data").glob("[0-9].png"))
    images = torch.stack([prepare(Image.open(path).convert("L")) for path in digits])
    labels = torch.tensor([int(path.stem) for path in digits])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(60):
        optimizer.zero_grad()
        loss = torch.nn.functional.nll_loss(model(images), labels)
        loss.backward()
        optimizer.step()
    model.eval()
    assert (model(images).argmax(1) == labels).all(), "the mnist stand-in did not fit its digits"
    return model.state_dict()


def make(suite: Path, cache: Path) -> Path:
    """Fill ``cache`` with download stand-ins (kept between runs) and ``suite`` with the weights
    and archives it lacks; returns the folder to put on the suite's ``PYTHONPATH``."""
    cache.mkdir(parents=True, exist_ok=True)
    for name, build in DOWNLOADS.items():
        if not (cache / name).exists():
            torch.save(_seeded_state(build), cache / name)
    if not (suite / STATEFUL / "model_cnn.pt").exists():
        torch.save(_seeded_state(_net(suite / STATEFUL / "model.py")),
                   suite / STATEFUL / "model_cnn.pt")
    if not (suite / MNIST / "mnist_cnn.pt").exists():
        torch.save(_mnist_state(suite), suite / MNIST / "mnist_cnn.pt")
    mnist = cache / "mnist.mar"
    if not mnist.exists():
        subprocess.run([sys.executable, "-m", "model_archiver.model_packaging",
                        "--model-name", "mnist", "--version", "1.0",
                        "--model-file", str(suite / MNIST / "mnist.py"),
                        "--serialized-file", str(suite / MNIST / "mnist_cnn.pt"),
                        "--handler", str(suite / MNIST / "mnist_handler.py"),
                        "--export-path", str(cache), "--force"], check=True)
    for store in MNIST_STORES:
        if not (suite / store / "mnist.mar").exists():
            (suite / store).mkdir(parents=True, exist_ok=True)
            (suite / store / "mnist.mar").write_bytes(mnist.read_bytes())
    (cache / "sitecustomize.py").write_text(SITECUSTOMIZE.format(cache=str(cache)))
    return cache


#: Imported by every Python the suite starts: downloads named in the cache come from it.
SITECUSTOMIZE = '''
import os, shutil, urllib.request
_CACHE = {cache!r}
_HOSTS = ("https://download.pytorch.org/models/", "https://torchserve.pytorch.org/mar_files/")


def _local(url):
    if isinstance(url, str) and url.startswith(_HOSTS):
        path = os.path.join(_CACHE, url.rsplit("/", 1)[-1])
        return path if os.path.exists(path) else None


_urlretrieve = urllib.request.urlretrieve


def urlretrieve(url, filename=None, *args, **kwargs):
    path = _local(url)
    if path is None:
        return _urlretrieve(url, filename, *args, **kwargs)
    shutil.copyfile(path, filename)
    return filename, None


urllib.request.urlretrieve = urlretrieve

try:
    import requests.adapters, requests.models
except ImportError:
    pass
else:
    _send = requests.adapters.HTTPAdapter.send

    def send(self, request, *args, **kwargs):
        path = _local(request.url)
        if path is None:
            return _send(self, request, *args, **kwargs)
        response = requests.models.Response()
        response.status_code, response.url, response.request = 200, request.url, request
        with open(path, "rb") as f:
            response._content = f.read()
        return response

    requests.adapters.HTTPAdapter.send = send
'''
