"""The kernel's serving session: one engine and one HTTP server per process, as ``%serve`` runs them.

The magics and the upload widget find the engine here, so a model served by one cell is the
model that every later cell, ``curl`` and browser sees.
"""

from __future__ import annotations

import io
import json
import os
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jupyter_core.paths import jupyter_runtime_dir
from PIL import Image

from nbserve.api import announce
from nbserve.api.access import serving_notices
from nbserve.api.http import Server
from nbserve.api.routes import API_NAMES
from nbserve.api.startup import engine_for, find_archive, register_startup_models
from nbserve.config import SERVER_DEFAULTS, ServerConfig
from nbserve.errors import BadRequest, ModelNotFound
from nbserve.handlers import text_generation
from nbserve.notebook import restore
from nbserve.notebook.display import ServingStatus
from nbserve.serving.engine import Engine
from nbserve.serving.model_version import ModelVersion
from nbserve.serving.queue import Prediction, streamed
from nbserve.serving.workflow import Workflow
from nbserve.store import workflow_archiver
from nbserve.store.live import LiveModel, live_model
from nbserve.store.live_workflow import LiveWorkflow, archive_live_workflow, live_workflow
from nbserve.store.workflow_archive import open_workflow


class Session:
    """This process's engine and its HTTP APIs, started by the first ``%serve``."""

    def __init__(self):
        self.engine: Engine | None = None
        self.server: Server | None = None
        #: Where this kernel announced itself to the jupyter-server extension, if in a kernel.
        self.announcement = None
        #: Models this kernel deployed to Ray Serve (``%serve --on ray``), once it has.
        self.ray = None
        #: The cell (``In [7]``) that served each live object, for the notebook's snapshot.
        self.live_cells: dict[str, str] = {}
        self._lock = threading.RLock()

    def start(self, config: ServerConfig | None = None) -> list[str]:
        """Start the engine and the three APIs unless they run; returns notices for the user.

        An API whose address was not named and is taken (another kernel serving) takes a free
        port, and a notice says which; a named address that is taken is an error.
        """
        config = config or ServerConfig()
        with self._lock:
            if self.server is not None:
                return self._unchanged(config)
            engine = self.engine or engine_for(config)
            kernel_id = announce.current_kernel_id()
            server = Server(engine, config, secret=announce.new_secret(),
                            key_file=_key_file(kernel_id))
            server.start(fallback=frozenset(API_NAMES) - _named(config))
            self.engine, self.server = engine, server
            if kernel_id:
                self.announcement = announce.announce(kernel_id, server.urls, server.secret)
            if _shell() is not None:  # what this notebook serves, for %serve --restore
                engine.on_change.append(lambda: restore.write(engine, self.live_cells))
        moved = [f"Port {urlsplit(address).port} is taken (another kernel serving?): the {api} API "
                 f"is at {server.urls[api]} instead." for api, address in server.moved.items()]
        return moved + serving_notices(config, server.tokens)

    @property
    def keys(self) -> dict[str, str]:
        """TorchServe's keys for this kernel's APIs (``inference``, ``management``, ``API``);
        empty while nothing is served or with token authorization off."""
        server = self.server
        return server.tokens.keys if server is not None and server.tokens is not None else {}

    def _unchanged(self, config: ServerConfig) -> list[str]:
        changed = [api for api in _named(config)
                   if config.values[f"{api}_address"] != self.server.config.values[f"{api}_address"]]
        if not changed:
            return []
        return [f"Already serving at {', '.join(self.server.urls.values())}; the addresses "
                "asked for apply after `%serve --stop`."]

    def serve(self, source, *, model_name: str | None = None, **settings) -> ModelVersion:
        """Serve an archive or a :class:`~nbserve.store.live.LiveModel`; it replaces what was served
        under its name once it has loaded, and requests in flight are answered first."""
        if isinstance(source, LiveModel):
            self.live_cells[model_name or source.model_name] = _current_cell()
        version = self.engine.register(source, model_name=model_name, replace=True, **settings)
        self._retire_others(version)
        return version

    def serve_workflow(self, source: Path | LiveWorkflow, name: str | None,
                       config: ServerConfig) -> Workflow:
        """Serve a ``.war`` or a workflow declared in a cell, replacing a workflow of its name;
        a ``.war``'s node archives come from the model store, else the folder it is in."""
        management = self.server.management
        if isinstance(source, LiveWorkflow):
            archive, store = source, None
        else:
            archive = open_workflow(source, name)
            store = Path(config.model_store) if config.model_store else Path(source).parent
        if archive.name in management.workflows:
            management.unregister_workflow(archive.name, trusted=True)
        return management.add_workflow(archive, lambda url: find_archive(url, store))

    def serve_models(self, config: ServerConfig, models: list[str]) -> list[ModelVersion]:
        """``--models``/``--model-store`` as ``nbserve serve`` reads them, each replacing its name."""
        versions = register_startup_models(self.engine, config, models, replace=True)
        for version in versions:
            self._retire_others(version)
        return versions

    def on_ray(self, address: str | None, *, http_address: str | None,
               config: ServerConfig):
        """The kernel's connection to Ray Serve, made on first use (``%serve --on ray``)."""
        with self._lock:
            if self.ray is None:
                from nbserve import ray_serve

                self.ray = ray_serve.connect(address, http_address=http_address, config=config,
                                             key_file=_key_file(announce.current_kernel_id(), "ray-"))
            return self.ray

    def _retire_others(self, version: ModelVersion) -> None:
        self.engine.set_default(version.name, version.version)
        for other in list(self.engine.model(version.name).versions):
            if other != version.version:
                self.engine.unregister(version.name, other, wait=False)

    def stop(self, model_name: str | None = None) -> str:
        """Stop serving one model, or everything (freeing the ports, deleting what this kernel
        deployed to Ray); in-flight work is answered."""
        with self._lock:
            if self.engine is None and self.ray is None:
                return "Nothing is being served."
            if model_name:
                if self._on_ray(model_name):
                    self.ray.undeploy(model_name)
                    return f"Stopped serving {model_name} on Ray."
                if self.engine is None:
                    raise ModelNotFound(f"Model not found: {model_name}")
                model = self.engine.model(model_name)
                for version in list(model.versions):
                    self.engine.unregister(model_name, version)
                return f"Stopped serving {model_name}."
            if self.ray is not None:
                self.ray.shutdown()
                self.ray = None
            if self.announcement is not None:
                announce.withdraw(self.announcement)
                self.announcement = None
            if self.server is not None:
                self.server.stop()
            if self.engine is not None:
                self.engine.close()
            self.engine = self.server = None
            return "Stopped serving; the ports are free."

    def status(self) -> ServingStatus:
        with self._lock:
            keys_at = {}
            if self.keys:
                keys_at["here"] = "__import__('nbserve').session.current.keys['inference']"
            if self.ray is not None and self.ray.tokens is not None:
                keys_at["ray"] = "__import__('nbserve').session.current.ray.tokens.keys['inference']"
            return ServingStatus.of(self.engine, self.server.urls if self.server else {},
                                    self.ray, keys_at=keys_at)

    def _on_ray(self, model_name: str) -> bool:
        """Whether this kernel deployed ``model_name`` to Ray (rather than serving it here)."""
        return self.ray is not None and model_name in self.ray.models

    def get(self, model_name: str, version: str | None = None):
        """A model version served here, a workflow, or a model this kernel deployed to Ray."""
        if self._on_ray(model_name):
            return self.ray.model(model_name)
        if self.server is not None and model_name in self.server.management.workflows:
            return self.server.management.workflows[model_name]
        if self.engine is None:
            raise ModelNotFound(f"Model not found: {model_name} (nothing is served yet: "
                                "%serve a model first)")
        return self.engine.get(model_name, version)

    def submit(self, model_name: str, inputs: dict, *, version: str | None = None,
               on_part=None) -> Future:
        """Queue one request where the model is served; the future resolves to a Prediction.
        ``on_part`` gets the parts a streaming handler sends first (in this process only)."""
        if self._on_ray(model_name):
            return self.ray.submit(model_name, inputs, version=version)
        workflow = self.server.management.workflows.get(model_name) if self.server else None
        if workflow is not None:
            return _as_prediction(workflow.predict(inputs, {}))
        self.get(model_name, version)
        return self.engine.submit(model_name, inputs, version=version, on_part=on_part)


def _as_prediction(answer: Future) -> Future:
    """A workflow's answer (body bytes, content type) as a model's: its JSON as a value."""
    prediction: Future = Future()

    def settle(done: Future) -> None:
        if done.exception() is not None:
            prediction.set_exception(done.exception())
            return
        body, _ = done.result()
        try:
            value = json.loads(body)
        except ValueError:  # not JSON: text where it is text
            try:
                value = body.decode()
            except UnicodeDecodeError:
                value = body
        prediction.set_result(Prediction(value))

    answer.add_done_callback(settle)
    return prediction


def _shell():
    """The kernel's IPython shell; None outside a kernel (a script, a terminal IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return shell if getattr(shell, "kernel", None) is not None else None


def _current_cell() -> str:
    """The cell running now, as the notebook labels it (``In [7]``)."""
    shell = _shell()
    return f"In [{shell.execution_count}]" if shell is not None else "a script"


def _key_file(kernel_id: str | None, kind: str = "") -> Path:
    """Where a kernel keeps its keys: Jupyter's runtime dir, private to the user, one file per
    kernel (TorchServe's ``key_file.json`` in the notebook's folder would be shared by every
    kernel started there, and committed with it). ``kind``: ``ray-`` for the keys of the Ray
    Serve ingress this kernel deploys to."""
    return Path(jupyter_runtime_dir()) / f"nbserve-{kind}key_file-{kernel_id or os.getpid()}.json"


def _named(config: ServerConfig) -> set[str]:
    """The APIs whose address the user chose (one that differs from TorchServe's default)."""
    return {api for api in API_NAMES
            if config.values[f"{api}_address"] != SERVER_DEFAULTS[f"{api}_address"]}


#: The session of this process (the kernel's).
current = Session()


def serve(source: Any = None, *, model_name: str | None = None, version: str | None = None,
          handler: Any = None, tokenizer: Any = None, extra_files: list[str] = (),
          models: list[str] = (), config: ServerConfig | None = None,
          **settings) -> list[ModelVersion]:
    """Serve models from this process over TorchServe's APIs, as ``%serve`` does; what was
    served. The APIs start with the first call (``config``: their config.properties).

    ``source`` is an archive (a path, or a name in the model store), a Hugging Face model
    folder, or a live object (an ``nn.Module``, a TorchScript module, or a handler class,
    instance or function, with ``model_name``; a causal language model with its ``tokenizer``,
    or a ``text-generation`` pipeline, is served for text generation and OpenAI's API);
    ``models`` are ``nbserve serve --models`` entries. ``settings`` are
    :meth:`Engine.register`'s (``batch_size``, ``initial_workers``, ...)::

        import nbserve
        nbserve.serve("model-store/densenet161.mar")
        nbserve.predict("densenet161", open("cat.jpg", "rb").read())
        nbserve.stop()
    """
    config = config or ServerConfig()
    current.start(config)
    served = current.serve_models(config, list(models)) if (models or config.load_models) else []
    if isinstance(source, LiveWorkflow) or (isinstance(source, (str, os.PathLike))
                                            and str(source).endswith(".war")):
        if not isinstance(source, LiveWorkflow):
            source = find_archive(source, config.workflow_store or config.model_store)
        workflow = current.serve_workflow(source, model_name, config)
        served += [current.engine.get(node.model_name) for node in workflow.archive.nodes.values()]
    elif isinstance(source, (str, os.PathLike)):
        served.append(current.serve(find_archive(source, config.model_store), handler=handler,
                                    model_name=model_name, version=version, **settings))
    elif source is not None:
        if not model_name:
            raise BadRequest("Serving a live object needs a model_name.")
        if tokenizer is not None or hasattr(source, "tokenizer") and hasattr(source, "model"):
            source = text_generation.live_handler(source, tokenizer)
        live = live_model(source, model_name, handler=handler, version=version or "1.0",
                          extra_files=list(extra_files))
        served.append(current.serve(live, **settings))
    return served


def workflow(name: str, dag: dict, models: dict | None = None, *,
             model_store: str | os.PathLike | None = None) -> LiveWorkflow:
    """A TorchServe workflow declared here, to serve (``nbserve.serve(pipeline)``,
    ``%serve pipeline``) and archive later (:func:`archive_workflow`).

    ``dag`` is ``{node: [children]}``: each node a function (TorchServe's ``handle(data,
    context)``, named by its name) or a name in ``models``, which maps it to an archive (a
    path, a file in ``model_store``, or a model served in this kernel) or to ``{"url": ...}``
    with the spec's settings (``"batch-size"``, ``"retry-attempts"``...); ``models`` may also
    hold the workflow's own settings, as a spec's ``models:`` does."""
    def find(url):
        if not Path(url).exists() and current.engine is not None:
            try:
                return current.engine.get(str(url)).archive
            except ModelNotFound:
                pass
        return find_archive(url, model_store)
    return live_workflow(name, dag, models, find)


def archive_workflow(workflow: LiveWorkflow | str, spec_file: str | os.PathLike | None = None,
                     handler: str | os.PathLike | None = None, *,
                     extra_files: str | list | None = None, export_path: str | os.PathLike = ".",
                     force: bool = False) -> Path:
    """Write a ``.war`` as ``nbserve archive-workflow`` does: of a workflow declared in a
    cell (its spec and handler file written from it, its node archives copied beside), or
    from a workflow name and its files, as torch-workflow-archiver takes them."""
    if isinstance(workflow, LiveWorkflow):
        return archive_live_workflow(workflow, export_path, force)
    if spec_file is None:
        raise BadRequest("archive_workflow needs a workflow declared with nbserve.workflow(), "
                         "or a name and a spec_file.")
    return workflow_archiver.archive_workflow(workflow, spec_file, handler,
                                              extra_files=extra_files,
                                              export_path=export_path, force=force)


def predict(model_name: str, data: Any, *, version: str | None = None, stream: bool = False):
    """A model's answer to ``data`` (bytes, text, a PIL image, a tensor...), as the HTTP API
    answers it. With ``stream=True``, a generator of the parts a streaming handler sends, the
    answer last."""
    inputs = {"body": as_body(data)}
    if not stream:
        return current.submit(model_name, inputs, version=version).result().value
    return streamed(lambda on_part: current.submit(model_name, inputs, version=version,
                                                   on_part=on_part))


def stop(model_name: str | None = None) -> str:
    """Stop serving one model, or everything (freeing the ports), as ``%serve --stop`` does."""
    return current.stop(model_name)


def as_body(value: Any) -> Any:
    """A Python value as the request body a client would send: images as PNG bytes, tensors
    and arrays as (JSON) lists, text as text."""
    if isinstance(value, Image.Image):
        out = io.BytesIO()
        value.save(out, format="PNG")
        return out.getvalue()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, os.PathLike):
        return Path(value).read_bytes()
    if hasattr(value, "tolist") and not isinstance(value, (bytes, str)):
        return value.tolist()
    return value
