"""Finding and loading a model's handler, as TorchServe's model loader does.

``--handler`` names a default handler (``image_classifier``), a file in the archive
(``my_handler.py``), or a function in one (``my_handler.py:handle``). A module is used through its
function (``handle`` unless named) or, failing that, through the one class it defines.

TorchServe runs each model in processes of its own, with the model's folder on ``sys.path``. Here
models share a process, so a handler loads inside :func:`archive_imports`: its folder first on
``sys.path`` (``import model`` and ``importlib.import_module("model")`` work as under
TorchServe), and its archive's modules imported fresh for it and taken out of ``sys.modules``
after, so two models' ``model.py`` never stand for each other.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from nbserve.errors import NBServeError
from nbserve.handlers import DEFAULT_HANDLERS, TORCHSERVE_HANDLERS, ts_compat
from nbserve.handlers.util import list_classes_from_module

_import_lock = threading.RLock()


class HandlerLoadError(NBServeError):
    """A handler cannot be found or set up."""

    status = 500
    type = "InternalServerException"


@dataclass
class LoadedHandler:
    """A handler's entry points: ``handle(batch, context)`` and ``initialize(context)``."""

    handle: Callable[[list, Any], list]
    initialize: Callable[[Any], Any]
    #: The handler object for class-based handlers; the engine pipelines BaseHandler subclasses.
    instance: Any = None


def import_file(path: str | os.PathLike) -> ModuleType:
    """Import a ``.py`` file from an archive under a name unique to its path.

    The file's folder is first on ``sys.path`` while it imports, so it can import its siblings
    (``from model import Net``) as it would under TorchServe.
    """
    path = Path(path).resolve()
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    name = f"nbserve_archive_{digest}_{path.stem}"
    with _import_lock:
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        folder = str(path.parent)
        sys.path.insert(0, folder)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        finally:
            sys.path.remove(folder)
    return module


@contextmanager
def archive_imports(model_dir: str | os.PathLike):
    """While a model's handler loads and initializes: ``model_dir`` first on ``sys.path``, and
    the top-level modules it holds (``model.py``, packages) imported for this archive alone.

    Imports are serialised meanwhile. What the handler imported stays referenced by the handler;
    ``sys.modules`` gets back whatever those names meant before.
    """
    folder = Path(model_dir)
    if not folder.is_dir():
        yield
        return
    own = {p.stem for p in folder.glob("*.py")} | {
        p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}

    def owned() -> list[str]:
        return [name for name in sys.modules if name.split(".")[0] in own]

    with _import_lock:
        saved = {name: sys.modules.pop(name) for name in owned()}
        sys.path.insert(0, str(folder))
        try:
            yield
        finally:
            sys.path.remove(str(folder))
            for name in owned():
                del sys.modules[name]
            sys.modules.update(saved)


def load_handler(handler: Any, model_dir: str | os.PathLike) -> LoadedHandler:
    """Resolve ``handler`` for the model unpacked in ``model_dir``, and instantiate it.

    ``handler`` is the manifest's string, or, for a model served live from a notebook, a handler
    class, instance or ``handle`` function.
    """
    ts_compat.install()
    if isinstance(handler, type):
        return _entry_points(handler(), handler.__name__)
    if not isinstance(handler, str):
        if callable(getattr(handler, "handle", None)):
            return _entry_points(handler, type(handler).__name__)
        return LoadedHandler(handle=handler, initialize=lambda context: handler(None, context))
    module_name, _, function_name = handler.partition(":")
    module = _handler_module(module_name, Path(model_dir))
    function_name = function_name or "handle"

    if callable(getattr(module, function_name, None)):
        entry = getattr(module, function_name)
        return LoadedHandler(handle=entry, initialize=lambda context: entry(None, context))

    classes = list_classes_from_module(module)
    if len(classes) != 1:
        raise HandlerLoadError(
            f"Handler {handler!r} has no function {function_name!r} and defines "
            f"{len(classes)} classes ({', '.join(c.__name__ for c in classes) or 'none'}); "
            "TorchServe's contract asks for a handle function or exactly one handler class."
        )
    return _entry_points(classes[0](), classes[0].__name__)


def _entry_points(instance: Any, class_name: str) -> LoadedHandler:
    if not callable(getattr(instance, "handle", None)):
        raise HandlerLoadError(f"Handler class {class_name} has no handle method.")
    initialize = getattr(instance, "initialize", None) or (lambda context: None)
    return LoadedHandler(handle=instance.handle, initialize=initialize, instance=instance)


def _handler_module(module_name: str, model_dir: Path) -> ModuleType:
    file_name = os.path.basename(module_name)
    if not file_name.endswith(".py"):
        file_name += ".py"
    path = model_dir / file_name
    if path.is_file():
        return import_file(path)
    if f"ts.torch_handler.{module_name}" in ts_compat.ALIASES:  # vllm_handler: text_generation
        return importlib.import_module(ts_compat.ALIASES[f"ts.torch_handler.{module_name}"])
    if module_name in TORCHSERVE_HANDLERS:
        raise HandlerLoadError(
            f"TorchServe's {module_name!r} handler is not one nbserve runs; nbserve's default "
            f"handlers are {', '.join(DEFAULT_HANDLERS)}."
        )
    raise HandlerLoadError(
        f"Handler {module_name!r} is neither a default handler ({', '.join(DEFAULT_HANDLERS)}) "
        f"nor a file in the archive ({file_name} not found)."
    )
