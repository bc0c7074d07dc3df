"""``BaseHandler``: TorchServe's handler contract, documented once.

A handler turns a batch of requests into a batch of answers. The engine calls, per worker::

    handler = MyHandler()
    handler.initialize(context)          # once: load the model onto context's device
    answers = handler.handle(batch, context)   # per batch: one answer per request

``batch`` is a list with one dict per request: ``{"body": b"..."}`` for a raw request body, or one
key per form field (``{"data": b"..."}``) for multipart requests. A JSON body arrives parsed, a
``text/*`` body as ``str``. ``handle`` returns a list of the same length; each answer is a dict or
list (sent as JSON), a ``str`` or ``bytes`` (sent as they are).

``BaseHandler.handle`` runs the three steps a subclass overrides::

    class Doubler(BaseHandler):
        def preprocess(self, data):                 # requests -> a batch tensor
            return torch.tensor([float(row["body"]) for row in data])
        def inference(self, data):                  # batch tensor -> model output
            return data * 2
        def postprocess(self, data):                # model output -> one answer per request
            return data.tolist()

Handlers that keep ``BaseHandler.handle`` and whose ``preprocess`` is declared
:func:`per_request` let the engine preprocess each request on a pool of threads as it arrives,
while ``inference`` runs on the batch before. A handler raises
:class:`~nbserve.handlers.util.PredictionException` to answer with a status of its choosing.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
import pickle
import threading
import time

import torch

from nbserve.handlers.context import RequestProcessor
from nbserve.handlers.loader import import_file
from nbserve.handlers.util import list_classes_from_module, load_label_mapping, request_body

logger = logging.getLogger(__name__)


def timed(func):
    """Record a handler step's duration as ``ts_handler_<step>`` when model-config.yaml asks.

    As in TorchServe, timing is on with ``handler: {profile: true}``.
    """

    @functools.wraps(func)
    def wrapper(self, *args, **kwargs):
        context = getattr(self, "context", None)
        profile = context is not None and (context.model_yaml_config.get("handler") or {}).get("profile")
        if not profile:
            return func(self, *args, **kwargs)
        start = time.perf_counter()
        result = func(self, *args, **kwargs)
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        context.metrics.add_time("ts_handler_" + func.__name__, (time.perf_counter() - start) * 1000)
        return result

    return wrapper


def per_request(preprocess):
    """Declare that a ``preprocess`` treats each request alone, so that preprocessing a batch
    equals preprocessing its requests one by one and concatenating: nbserve may then split
    batches across its preprocessing threads. The default handlers' are; a ``preprocess``
    written for the whole batch (padding texts to the longest) must not be declared::

        class MyHandler(ImageClassifier):
            @per_request
            def preprocess(self, data):
                return torch.stack([my_transform(row["body"]) for row in data])
    """
    preprocess.per_request = True
    return preprocess


def declared_per_request(preprocess) -> bool:
    """Whether this ``preprocess`` (the method a handler class has) was declared
    :func:`per_request`; an override of a declared one is not, unless declared itself."""
    return getattr(preprocess, "per_request", False)


def compiled(model, pt2: dict | str | None):
    """``model`` as model-config.yaml's ``pt2`` asks, in any of TorchServe's forms:
    ``pt2: {compile: {enable: true, backend: inductor, mode: ...}}``, ``pt2: {backend: ...}``
    or ``pt2: inductor``."""
    if not pt2:
        return model
    if "export" in pt2:
        raise RuntimeError("model-config.yaml: pt2.export (an AOT-compiled .so) is not served by "
                           "nbserve: serve the model eager, or with pt2: {compile: {enable: true}}.")
    if isinstance(pt2, str):  # TorchServe's shortest form, the backend's name
        pt2 = {"backend": pt2}
    options = dict(pt2["compile"]) if "compile" in pt2 else {"enable": True, **pt2}
    if not options.pop("enable", False):
        return model
    model = torch.compile(model, **options)
    # TorchServe's line, which its users (and its suite) look for in model_log.log.
    logger.info("Compiled model with %s", ", ".join(f"{k} {v}" for k, v in options.items()))
    return model


def asks_for_handle(headers: dict) -> bool:
    """Whether a request asks for an explanation or a description (TorchServe's headers
    ``explain: True`` and ``describe: True``, any case), which ``handle`` answers."""
    processor = RequestProcessor(headers)
    return "True" in (processor.get_request_property("explain"),
                      processor.get_request_property("describe"))


class BaseHandler:
    """Loads an eager, TorchScript or ``torch.export`` model and runs it; see the module doc."""

    # Class-level defaults, not set in __init__: TorchServe's examples subclass without calling
    # super().__init__() (micro_batching's handler, for one), and still initialize.
    model = None
    mapping = None
    device = None
    initialized = False
    model_pt_path = None
    manifest = None
    map_location = None
    explain = False
    target = 0
    model_yaml_config: dict = {}

    @property
    def context(self):
        """The context of the batch this thread is working on.

        Per thread, because the engine preprocesses the next batch while this one runs through
        ``inference`` and ``postprocess``, and each step must see its own batch's headers. A
        thread that never set one (a handler's own helper threads, as TorchServe's
        ``MicroBatching`` runs) sees the latest set by any thread.
        """
        local = self.__dict__.get("_context_local")
        if local is not None and hasattr(local, "context"):
            return local.context
        return self.__dict__.get("_context_latest")

    @context.setter
    def context(self, context):
        if "_context_local" not in self.__dict__:
            self.__dict__["_context_local"] = threading.local()
        self.__dict__["_context_local"].context = context
        self.__dict__["_context_latest"] = context

    def initialize(self, context):
        """Load the model the manifest names onto the context's device, and the label map.

        Eager models (``modelFile`` plus a state dict) load with ``weights_only=True``: a
        checkpoint that would run code when unpickled is refused. ``.pt`` files without a model
        file load as TorchScript, ``.pt2`` files as ``torch.export`` programs. A model served
        live from a notebook has no file: each worker copies it onto its device.
        """
        self.context = context
        self.model_yaml_config = getattr(context, "model_yaml_config", None) or {}
        properties = context.system_properties
        gpu_id = properties.get("gpu_id")
        if gpu_id is not None and torch.cuda.is_available():
            self.map_location = "cuda"
            self.device = torch.device(f"cuda:{gpu_id}")
        elif gpu_id is not None and torch.backends.mps.is_available():
            self.map_location = "mps"
            self.device = torch.device("mps")
        else:
            self.map_location = "cpu"
            self.device = torch.device("cpu")

        self.manifest = context.manifest
        model_dir = properties.get("model_dir")
        model = self.manifest["model"]
        if "serializedFile" in model:
            self.model_pt_path = os.path.join(model_dir, model["serializedFile"])
        live_module = getattr(context, "live_module", None)
        if live_module is not None:
            self.model = copy.deepcopy(live_module).to(self.device)
            self.model.eval()
        elif self.model is None:  # a handler object served live may come with its model set
            self.model = self._load_model(model_dir, model.get("modelFile", ""))

        self.model = compiled(self.model, self.model_yaml_config.get("pt2"))

        self.mapping = load_label_mapping(os.path.join(model_dir, "index_to_name.json"))
        self.initialized = True

    def _load_model(self, model_dir, model_file):
        if model_file:
            model = self._load_pickled_model(model_dir, model_file, self.model_pt_path)
            model.to(self.device)
            model.eval()
            return model
        if self.model_pt_path and self.model_pt_path.endswith(".pt2"):
            return self._load_exported_program(self.model_pt_path)
        if self.model_pt_path and self.model_pt_path.endswith((".pt", ".pth", ".torchscript")):
            model = self._load_torchscript_model(self.model_pt_path)
            model.eval()
            return model
        raise RuntimeError(
            "No model weights could be loaded: the archive needs --model-file with a state "
            "dict, a TorchScript .pt, or a torch.export .pt2 as --serialized-file."
        )

    def _load_pickled_model(self, model_dir, model_file, model_pt_path):
        """Instantiate the one ``nn.Module`` class ``model_file`` defines, then load its weights."""
        model_def_path = os.path.join(model_dir, model_file)
        if not os.path.isfile(model_def_path):
            raise RuntimeError(f"Missing the model file {model_file}")
        module = import_file(model_def_path)
        classes = list_classes_from_module(module, torch.nn.Module)
        if len(classes) != 1:
            raise ValueError(
                f"Expected only one nn.Module class in {model_file}, found "
                f"{[c.__name__ for c in classes]}."
            )
        model = classes[0]()
        if model_pt_path:
            try:
                state_dict = torch.load(model_pt_path, map_location=self.device, weights_only=True)
            except pickle.UnpicklingError as e:
                raise RuntimeError(
                    f"Refusing to load {os.path.basename(model_pt_path)}: it is not a plain state "
                    f"dict, and unpickling it could run arbitrary code ({str(e).splitlines()[0]}). "
                    "Save the weights with torch.save(model.state_dict(), path)."
                ) from None
            model.load_state_dict(state_dict)
        return model

    def _load_torchscript_model(self, model_pt_path):
        return torch.jit.load(model_pt_path, map_location=self.device)

    def _load_exported_program(self, model_pt2_path):
        return torch.export.load(model_pt2_path).module().to(self.device)

    @per_request
    @timed
    def preprocess(self, data):
        """Requests -> the model's input. Default: the requests' (JSON) values as one tensor."""
        return self.to_device(torch.as_tensor([request_body(row) for row in data]))

    def to_device(self, batch):
        """A preprocessed batch on the model's device, unless the worker moves whole batches
        itself (it gathers them in pinned memory and copies them without blocking)."""
        if getattr(self.context, "stages_batches", False):
            return batch
        if isinstance(batch, list):
            return [item.to(self.device) for item in batch]
        return batch.to(self.device)

    @timed
    def inference(self, data, *args, **kwargs):
        """The model's input -> its output, without autograd, on the handler's device; under
        autocast where model-config.yaml's ``handler: {autocast: float16}`` (or ``bfloat16``)
        asks."""
        with torch.inference_mode(), self.autocast():
            return self.model(data.to(self.device), *args, **kwargs)

    def autocast(self):
        """Autocast to model-config.yaml's ``handler.autocast`` dtype; nothing if unset."""
        dtype = (self.model_yaml_config.get("handler") or {}).get("autocast")
        if not dtype:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=getattr(torch, dtype))

    @timed
    def postprocess(self, data):
        """The model's output -> one answer per request. Default: the output as lists."""
        return data.tolist()

    def handle(self, data, context):
        """Answer one batch: ``postprocess(inference(preprocess(data)))``."""
        return self.answer(data, context,
                           lambda rows: self.postprocess(self.inference(self.preprocess(rows))))

    def answer(self, data, context, predict):
        """A batch's answers: ``describe_handle`` or ``explain_handle`` where the request asks
        (headers ``describe``/``explain``), else ``predict(data)``; timed as HandlerTime."""
        start = time.time()
        self.context = context
        if self._is_describe():
            output = [self.describe_handle()]
        elif self._is_explain():
            output = self.explain_handle(self.preprocess(data), data)
        else:
            output = predict(data)
        context.metrics.add_time("HandlerTime", round((time.time() - start) * 1000, 2), None, "ms")
        return output

    def explain_handle(self, data_preprocess, raw_data):
        """Answer a request sent with the header ``explain: True`` with ``get_insights``."""
        row = raw_data[0]
        target = (row.get("target") if isinstance(row, dict) else None) or 0
        return self.get_insights(data_preprocess, request_body(row), target)

    def get_insights(self, tensor_data, raw_data, target=0):
        raise NotImplementedError(f"{type(self).__name__} does not explain its predictions.")

    def _is_explain(self) -> bool:
        self.explain = bool(self.context and self.context.get_request_header(0, "explain") == "True")
        return self.explain

    def _is_describe(self) -> bool:
        return bool(self.context and self.context.get_request_header(0, "describe") == "True")

    def describe_handle(self):
        """The answer to a request sent with ``describe: True``; subclasses say what they are."""
        return None

    def get_device(self):
        return self.device
