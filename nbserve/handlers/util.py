"""Helpers handlers use, as ``ts.utils.util`` names them."""

from __future__ import annotations

import inspect
import itertools
import json
import logging
import os

import yaml

#: The raster formats Pillow may open for a request. The rest are refused before Pillow looks
#: at them: EPS and PostScript run Ghostscript where it is installed, and none of the others is
#: a photo a model is served.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")

logger = logging.getLogger(__name__)


class PredictionException(Exception):
    """Raised by a handler to answer its requests with ``error_code`` and ``message``.

    nbserve's own handlers raise it with 400 for input they cannot read, so a bad image is the
    caller's error, not the server's.
    """

    def __init__(self, message: str, error_code: int = 500):
        self.message = message
        self.error_code = error_code
        super().__init__(message)

    def __str__(self):
        return f"{self.message} : {self.error_code}"


def request_body(row):
    """A request's payload: its ``data`` form field, else its ``body``, as TorchServe reads it."""
    if isinstance(row, dict):
        return row.get("data") or row.get("body")
    return row


def list_classes_from_module(module, parent_class=None) -> list[type]:
    """The classes ``module`` defines itself (not those it imports), optionally of one base."""
    classes = [
        member for _, member in inspect.getmembers(module, inspect.isclass)
        if member.__module__ == module.__name__
    ]
    if parent_class is not None:
        return [c for c in classes if issubclass(c, parent_class)]
    return classes


def load_label_mapping(mapping_file_path) -> dict[str, str] | None:
    """Read ``index_to_name.json``: ``{"0": "tench"}`` or ``{"0": ["n01440764", "tench"]}``."""
    if not os.path.isfile(mapping_file_path):
        logger.info("%r is missing; answers will name classes by index.", str(mapping_file_path))
        return None
    with open(mapping_file_path) as f:
        mapping = json.load(f)
    if not isinstance(mapping, dict):
        raise ValueError('index->name JSON mapping should be in "class": "label" format.')
    if isinstance(mapping.get("object_type_names"), list):
        return {str(k): v for k, v in enumerate(mapping["object_type_names"])}
    for key, value in mapping.items():
        label = value[-1] if isinstance(value, list) else value
        if not isinstance(label, str):
            raise ValueError("labels in index->name mapping must be either str or List[str]")
        mapping[key] = label
    return mapping


def map_class_to_label(probs, mapping=None, lbl_classes=None) -> list[dict]:
    """``[{label: probability, ...}, ...]``, one dict per row of ``probs``."""
    if not isinstance(probs, list):
        raise TypeError("Convert classes to list before doing mapping")
    if mapping is not None and not isinstance(mapping, dict):
        raise TypeError("Mapping must be a dict")
    if lbl_classes is None:
        lbl_classes = itertools.repeat(range(len(probs[0])), len(probs))
    return [
        {(mapping[str(c)] if mapping is not None else str(c)): p for c, p in zip(*row)}
        for row in zip(lbl_classes, probs)
    ]


def get_yaml_config(yaml_file_path) -> dict:
    with open(yaml_file_path) as f:
        return yaml.safe_load(f) or {}
