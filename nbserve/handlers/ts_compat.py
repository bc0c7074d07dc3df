"""``import ts.torch_handler...`` for handlers written for TorchServe, with or without it installed.

:func:`install` registers nbserve's handler modules under TorchServe's module names, so
``from ts.torch_handler.image_classifier import ImageClassifier`` gives nbserve's class and a
subclass of it runs in nbserve's pipeline. ``ts`` modules nbserve does not provide are looked up
in an installed TorchServe, if there is one.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from pathlib import Path

from nbserve.handlers.context import TORCHSERVE_API_VERSION

ALIASES = {
    "ts.context": "nbserve.handlers.context",
    "ts.torch_handler.base_handler": "nbserve.handlers.base",
    "ts.torch_handler.vision_handler": "nbserve.handlers.vision",
    "ts.torch_handler.image_classifier": "nbserve.handlers.image_classifier",
    "ts.torch_handler.image_segmenter": "nbserve.handlers.image_segmenter",
    "ts.torch_handler.object_detector": "nbserve.handlers.object_detector",
    "ts.torch_handler.text_handler": "nbserve.handlers.text",
    "ts.torch_handler.text_classifier": "nbserve.handlers.text_classifier",
    "ts.torch_handler.text_generation": "nbserve.handlers.text_generation",
    "ts.torch_handler.vllm_handler": "nbserve.handlers.text_generation",
    "ts.utils.util": "nbserve.handlers.util",
    "ts.handler_utils.timer": "nbserve.handlers.base",
    "ts.handler_utils.micro_batching": "nbserve.handlers.micro_batching",
    "ts.handler_utils.utils": "nbserve.handlers.handler_utils",
    "ts.protocol.otf_message_handler": "nbserve.handlers.streaming",
    "ts.metrics.dimension": "nbserve.handlers.metrics",
    "ts.metrics.metric_type_enum": "nbserve.handlers.metrics",
}
PACKAGES = ("ts", "ts.torch_handler", "ts.utils", "ts.handler_utils", "ts.protocol", "ts.metrics")

_lock = threading.Lock()


def install() -> None:
    """Make the ``ts`` names importable; a no-op once done, or where ``ts`` is already imported."""
    with _lock:
        if "ts" in sys.modules:
            return
        try:
            real = importlib.util.find_spec("ts")
        except ImportError:
            real = None
        real_root = Path(real.submodule_search_locations[0]) if real else None
        for name in PACKAGES:
            package = types.ModuleType(name, "TorchServe's module, as nbserve provides it.")
            relative = name.split(".")[1:]
            real_dir = real_root.joinpath(*relative) if real_root else None
            package.__path__ = [str(real_dir)] if real_dir and real_dir.is_dir() else []
            sys.modules[name] = package
        sys.modules["ts"].__version__ = TORCHSERVE_API_VERSION
        for alias, target in ALIASES.items():
            sys.modules[alias] = importlib.import_module(target)
        for name in list(PACKAGES[1:]) + list(ALIASES):
            parent, _, child = name.rpartition(".")
            setattr(sys.modules[parent], child, sys.modules[name])
        # ``from ts.handler_utils import MicroBatching``, as its package exports it.
        sys.modules["ts.handler_utils"].MicroBatching = sys.modules[
            "ts.handler_utils.micro_batching"].MicroBatching
