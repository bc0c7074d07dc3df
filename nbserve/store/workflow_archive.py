"""TorchServe's workflow archives (``.war``, as torch-workflow-archiver 0.2.15 writes them): a
YAML spec of models and a DAG, a handler file with the DAG's function nodes, extra files, and
``WAR-INF/MANIFEST.json``. Unpacked into the cache and checked as model archives are
(nbserve.store.archive); the spec is read as TorchServe reads it, with its errors."""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from nbserve.errors import ArchiveError, BadRequest
from nbserve.store.archive import unpack_cached

MANIFEST_PATH = "WAR-INF/MANIFEST.json"
#: The spec's node settings, with TorchServe's defaults for the whole workflow.
SETTINGS = {"min-workers": 1, "max-workers": 1, "batch-size": 1, "max-batch-delay": 50,
            "retry-attempts": 1, "timeout-ms": 10000}


@dataclass(frozen=True)
class WorkflowNode:
    """One node of the DAG, served as the model ``{workflow}__{node}``: an archive
    (``url``), or else the handler file's function of the node's name."""

    name: str
    model_name: str
    url: str | None
    settings: dict


@dataclass
class WorkflowArchive:
    source: Path
    path: Path
    manifest: dict
    name: str
    nodes: dict[str, WorkflowNode]
    #: Each node's children, in the spec's order.
    dag: dict[str, list[str]]
    #: The workflow's own settings (the spec's global ones, else TorchServe's defaults).
    settings: dict
    in_use: object = field(default=None, compare=False, repr=False)
    _functions: object = field(default=None, compare=False, repr=False)

    @property
    def handler(self) -> Path | None:
        handler = self.manifest["workflow"].get("handler")
        return self.path / handler if handler else None

    def model_source(self, node: WorkflowNode, resolve: Callable[[str], Path]):
        """What a model node serves: its ``url`` in the model store, found by ``resolve``."""
        return resolve(node.url)

    def function(self, name: str) -> Callable:
        """The function node ``name``: the handler file's function of that name."""
        if self.handler is None:
            raise ValueError(f"{name} is not a model of the spec, and the workflow has no "
                             "handler file for its functions")
        if self._functions is None:  # the handler file runs once, for all its function nodes
            spec = importlib.util.spec_from_file_location(f"nbserve_workflow_{self.name}",
                                                          self.handler)
            self._functions = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(self._functions)
        function = getattr(self._functions, name, None)
        if not callable(function):
            raise ValueError(f"{self.handler.name} has no function {name}")
        return function

    @property
    def start(self) -> str:
        return next(n for n in self.dag if not any(n in c for c in self.dag.values()))

    def parents(self, node: str) -> list[str]:
        return [parent for parent, children in self.dag.items() if node in children]


def open_workflow(source: str | os.PathLike, name: str | None = None) -> WorkflowArchive:
    """Open a ``.war`` (or its unpacked folder); ``name`` overrides the manifest's."""
    source = Path(source)
    if source.is_dir():
        path, in_use = source, None
    elif source.is_file():
        path, in_use = unpack_cached(source)
    else:
        raise ArchiveError(f"Workflow archive {str(source)!r} not found.")
    try:
        manifest = json.loads((path / MANIFEST_PATH).read_text())
        workflow = manifest["workflow"]
        spec_file = path / workflow["specFile"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ArchiveError(f"{source} has no valid {MANIFEST_PATH}: it is not a workflow "
                           "archive.") from None
    name = name or workflow.get("workflowName") or source.name.split(".")[0]
    try:
        spec = yaml.safe_load(spec_file.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise BadRequest(f"Invalid workflow specification: Failed to parse yaml ({error}).") \
            from None
    nodes, dag, settings = read_spec(spec, name)
    return WorkflowArchive(source, path, manifest, name, nodes, dag, settings, in_use)


def read_spec(spec, workflow: str) -> tuple[dict[str, WorkflowNode], dict[str, list[str]], dict]:
    """TorchServe's reading of the spec: global settings, then each model's; every DAG name
    that is not a model is a function of the handler file. One start node, no cycle."""
    if not isinstance(spec, dict) or not isinstance(spec.get("models"), dict) \
            or not isinstance(spec.get("dag"), dict):
        raise BadRequest("Invalid workflow specification: it needs a 'models' and a 'dag' "
                         "mapping.")
    defaults = dict(SETTINGS)
    models = {}
    for key, value in spec["models"].items():
        if key in SETTINGS:
            defaults[key] = value
        elif isinstance(value, dict):
            models[key] = value
    nodes: dict[str, WorkflowNode] = {}
    dag: dict[str, list[str]] = {}

    def node(name: str) -> None:
        if name in nodes:
            return
        model = models.get(name)
        if model is None:  # a function node: TorchServe's fixed settings for it
            settings = {**dict(SETTINGS, **{"max-batch-delay": 0}),
                        "retry-attempts": defaults["retry-attempts"],
                        "timeout-ms": defaults["timeout-ms"]}
        else:
            settings = {key: model.get(key, defaults[key]) for key in SETTINGS}
        nodes[name] = WorkflowNode(name, f"{workflow}__{name}",
                                   model.get("url") if model else None, settings)
        dag.setdefault(name, [])

    for name, children in spec["dag"].items():
        node(str(name))
        for child in children or []:
            if child is None or not str(child).strip():
                continue
            child = str(child)
            if child == name:
                raise BadRequest("Invalid workflow specification: Self loop exception")
            node(child)
            dag[str(name)].append(child)
    starts = [n for n in dag if not any(n in c for c in dag.values())]
    if len(starts) != 1:
        raise BadRequest("Invalid workflow specification: DAG should have only one start node")
    if len(_ordered(dag)) != len(dag):
        raise BadRequest("Invalid workflow specification: Not a valid DAG")
    return nodes, dag, defaults


def _ordered(dag: dict[str, list[str]]) -> list[str]:
    """The nodes in an order where each comes after its parents (fewer if there is a cycle)."""
    waiting = {n: sum(n in c for c in dag.values()) for n in dag}
    ready = [n for n, count in waiting.items() if count == 0]
    order = []
    while ready:
        name = ready.pop()
        order.append(name)
        for child in dag[name]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    return order
