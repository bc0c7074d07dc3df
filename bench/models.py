"""The benchmark's archives: torchvision's densenet161 and a small model, made once and cached.

Weights are seeded random ones (no network here); speed does not depend on their values.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import torch
import torchvision

from nbserve.store.archiver import archive

REPO = Path(__file__).parent.parent
LABELS = REPO / "examples" / "densenet161" / "index_to_name.json"
CACHE = Path.home() / ".cache" / "nbserve" / "bench"

MODEL_FILES = {
    "densenet161": REPO / "examples" / "densenet161" / "model.py",
}
SMALL_MODEL_PY = '''\
from torchvision.models.mobilenetv3 import MobileNetV3, _mobilenet_v3_conf


class ImageClassifier(MobileNetV3):
    def __init__(self):
        settings, last_channel = _mobilenet_v3_conf("mobilenet_v3_small")
        super().__init__(settings, last_channel)
'''

#: A model whose forward pass costs almost nothing: what a server reaches with it is its own
#: cost per request plus the handler's preprocessing (decoding, resizing, normalising).
POOL_LINEAR_PY = '''\
import torch


class ImageClassifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(3, 1000)

    def forward(self, x):
        return self.fc(self.pool(x).flatten(1))
'''

MODELS = ("densenet161", "mobilenet_v3_small")

#: A handler with no model: it answers each request with its size, so a server's own cost
#: per request is all there is to measure.
ECHO_HANDLER = """\
def handle(data, context):
    return None if data is None else [{"bytes": len(row.get("body") or b"")} for row in data]
"""


def build(name: str) -> Path:
    """``name``.mar in the cache, made on first use."""
    mar = CACHE / "store" / f"{name}.mar"
    if mar.exists():
        return mar
    folder = CACHE / name
    folder.mkdir(parents=True, exist_ok=True)
    if name == "echo":
        (folder / "echo.py").write_text(ECHO_HANDLER)
        return archive(name, "1.0", str(folder / "echo.py"), export_path=CACHE / "store", force=True)
    model_py = folder / "model.py"
    torch.manual_seed(0)
    if name == "pool_linear":
        model_py.write_text(POOL_LINEAR_PY)
        namespace: dict = {}
        exec(POOL_LINEAR_PY, namespace)
        model = namespace["ImageClassifier"]()
    else:
        if name in MODEL_FILES:
            shutil.copy(MODEL_FILES[name], model_py)
        else:
            model_py.write_text(SMALL_MODEL_PY)
        model = getattr(torchvision.models, name)(weights=None)
    torch.save(model.state_dict(), folder / f"{name}.pth")
    return archive(name, "1.0", "image_classifier", model_file=model_py,
                   serialized_file=folder / f"{name}.pth", extra_files=[LABELS],
                   export_path=CACHE / "store", force=True)


def photo() -> bytes:
    """A real photo (scikit-image's cat, 451x300 JPEG), as a client would send it."""
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buf, "JPEG", quality=90)
    return buf.getvalue()
