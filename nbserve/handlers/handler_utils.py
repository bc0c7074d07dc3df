"""TorchServe's ``ts.handler_utils.utils``: the streaming call under the name its newer examples
import it by, and ``import_class``."""

from __future__ import annotations

import importlib

from nbserve.handlers.streaming import send_intermediate_predict_response

__all__ = ["import_class", "send_intermediate_predict_response"]


def import_class(class_name: str, module_prefix: str | None = None):
    """The class ``module.Class`` names (under ``module_prefix``, if given), as TorchServe's
    handlers look up a model class from model-config.yaml."""
    if not class_name:
        raise ImportError("class name is not defined")
    module_name, _, name = class_name.rpartition(".")
    if module_prefix:
        module = importlib.import_module(
            f"{module_prefix}.{module_name}" if module_name else module_prefix)
    elif module_name:
        module = importlib.import_module(module_name)
    else:
        raise ImportError("module name is not defined.")
    found = getattr(module, name, None)
    if found is None:
        raise ImportError(f"class:{name} not found in module:{module_name}.")
    return found
