"""Serving an object from the notebook as it is: no archive, and no weights written.

``%serve net --model-name digits --handler image_classifier`` hands the engine a
:class:`LiveModel`: a :class:`~nbserve.store.archive.ModelArchive` whose folder holds only links to
the extra files (``index_to_name.json``, say) and whose model is the object itself. What is
served is a snapshot taken at registration, so training that goes on in the notebook never
changes answers mid-flight; ``%serve`` again serves the new weights.
"""

from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nbserve._version import __version__
from nbserve.errors import BadRequest
from nbserve.store.archive import ModelArchive


@dataclass(frozen=True)
class LiveModel(ModelArchive):
    """A model object served without an archive; workers copy :attr:`module` onto their device."""

    #: The snapshot of the ``nn.Module`` (eager or TorchScript) to serve, or None when the
    #: handler object carries its own model.
    module: Any = None
    #: The handler object itself (an instance, a class or a ``handle`` function), if not named.
    handler_object: Any = None
    _folder: Any = field(default=None, repr=False, compare=False)

    @property
    def handler(self) -> Any:
        """The handler object if one was given, else the handler the manifest names."""
        return super().handler if self.handler_object is None else self.handler_object


def live_model(obj: Any, model_name: str, *, handler: Any = None, version: str = "1.0",
               extra_files: list[str | os.PathLike] = ()) -> LiveModel:
    """A :class:`LiveModel` for ``obj``: an ``nn.Module``, a TorchScript module, or a handler.

    ``handler`` is a default handler's name, a ``.py`` file, or a handler object; a handler
    object may also be ``obj`` itself, with its model already set.
    """
    is_module = isinstance(obj, (torch.nn.Module, torch.jit.ScriptModule))
    if not is_module and not callable(getattr(obj, "handle", None)) and not callable(obj):
        raise BadRequest(
            f"Cannot serve a {type(obj).__name__}: serve an nn.Module, a TorchScript module, "
            "or a handler (an object with handle(data, context)).")
    if is_module and handler is None:
        raise BadRequest("Serving a model object needs a handler: --handler image_classifier, "
                         "a handler .py file, or a handler object.")
    handler_object = None if is_module else obj
    if handler is not None and not isinstance(handler, (str, os.PathLike)):
        handler_object = handler
    handler_name = (str(handler) if isinstance(handler, (str, os.PathLike))
                    else _name_of(handler_object))
    folder = tempfile.TemporaryDirectory(prefix=f"nbserve-live-{model_name}-")
    try:
        for extra in extra_files:
            _link(extra, Path(folder.name), "Extra file")
        if isinstance(handler, (str, os.PathLike)) and str(handler).endswith(".py"):
            handler_name = _link(handler, Path(folder.name), "Handler file", file_only=True).name
    except BadRequest:
        folder.cleanup()
        raise
    snapshot = copy.deepcopy(obj) if is_module else None
    manifest = {
        "createdOn": "", "runtime": "python", "archiverVersion": __version__,
        "model": {"modelName": model_name, "modelVersion": str(version), "handler": handler_name},
    }
    return LiveModel(source=Path(f"{type(obj).__name__} (live)"), path=Path(folder.name),
                     manifest=manifest, module=snapshot, handler_object=handler_object,
                     _folder=folder)


def _link(file: str | os.PathLike, folder: Path, what: str, file_only: bool = False) -> Path:
    """Link ``file`` into ``folder`` under its own name (once), as an archive would carry it."""
    source = Path(file).resolve()
    if not (source.is_file() if file_only else source.exists()):
        raise BadRequest(f"{what} {file} not found.")
    link = folder / source.name
    if not link.exists():
        os.symlink(source, link)
    return link


def _name_of(handler: Any) -> str:
    return getattr(handler, "__name__", None) or type(handler).__name__
