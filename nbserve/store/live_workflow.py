"""A workflow declared in a cell: TorchServe's DAG of models and functions built from live
objects, served under ``/wfpredict/{name}`` without writing a ``.war``, and archived later into
one that TorchServe serves (the spec written from the DAG, the handler file from the
functions' source)::

    def pre(data, context): ...
    def aggregate(data, context): ...

    pipeline = nbserve.workflow("pipeline", {pre: ["densenet", "resnet"],
                                             "densenet": [aggregate], "resnet": [aggregate]},
                                models={"densenet": "densenet161.mar", "resnet": "resnet18"})
    nbserve.serve(pipeline)
    nbserve.archive_workflow(pipeline, export_path="wf-store")

Function nodes keep TorchServe's contract, ``handle(data, context)`` on a batch.
"""

from __future__ import annotations

import builtins
import dis
import inspect
import shutil
import tempfile
import textwrap
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from nbserve.errors import ArchiveError, BadRequest
from nbserve.store.archive import ModelArchive
from nbserve.store.live import LiveModel
from nbserve.store.workflow_archive import SETTINGS, WorkflowArchive, WorkflowNode, read_spec
from nbserve.store.workflow_archiver import archive_workflow


@dataclass
class LiveWorkflow(WorkflowArchive):
    """A workflow whose function nodes are the cell's functions and whose model nodes are
    archives or models served in this kernel, each found when the workflow was declared."""

    functions: dict[str, Callable] = field(default_factory=dict)
    #: Each model node's archive: a path, or the archive of a model served here.
    sources: dict[str, Path | ModelArchive] = field(default_factory=dict)
    #: The spec's ``models:`` as declared (global settings and each node's).
    models: dict = field(default_factory=dict)

    def model_source(self, node: WorkflowNode, resolve: Callable[[str], Path]):
        return self.sources[node.name]

    def function(self, name: str) -> Callable:
        return self.functions[name]


def live_workflow(name: str, dag: dict, models: dict | None,
                  find: Callable[[str], Path | ModelArchive]) -> LiveWorkflow:
    """The workflow ``name`` of ``dag`` (``{node: [children]}``, each node a function or a
    name in ``models``). ``models`` maps a node to an archive, a served model's name or
    ``{"url": ..., "batch-size": ...}``, beside the workflow's own settings
    (``"retry-attempts": 2``); ``find`` gives the archive a url means."""
    functions: dict[str, Callable] = {}

    def node_name(node) -> str:
        if not callable(node):
            return str(node)
        if not inspect.isfunction(node) or node.__name__ == "<lambda>":
            raise BadRequest(f"{node!r} cannot be a workflow node: use a function defined "
                             "with def (its name names the node).")
        if functions.setdefault(node.__name__, node) is not node:
            raise BadRequest(f"Two different functions are named {node.__name__} in the DAG.")
        return node.__name__

    spec_dag = {node_name(node): [node_name(child) for child in children or []]
                for node, children in dag.items()}
    declared = {}
    for key, value in (models or {}).items():
        declared[key] = value if key in SETTINGS or isinstance(value, dict) else {"url": value}
    spec_models = {key: (dict(value, url=str(value["url"])) if isinstance(value, dict) else value)
                   for key, value in declared.items()}
    nodes, spec_dag, settings = read_spec({"models": spec_models, "dag": spec_dag}, name)
    unknown = [n for n, node in nodes.items() if node.url is None and n not in functions]
    if unknown:
        raise BadRequest(f"Workflow {name}: {', '.join(unknown)} is neither a model in models "
                         "nor a function.")
    sources = {n: find(declared[n]["url"]) for n, node in nodes.items() if node.url is not None}
    manifest = {"workflow": {"workflowName": name, "specFile": None, "handler": None}}
    return LiveWorkflow(Path(f"{name} (live)"), None, manifest, name, nodes, spec_dag, settings,
                        functions=functions, sources=sources, models=declared)


def archive_live_workflow(workflow: LiveWorkflow, export_path: str | Path = ".",
                          force: bool = False) -> Path:
    """Write ``workflow`` as ``{name}.war`` into ``export_path``, with its node archives copied
    beside it (TorchServe finds them in its model store: serve that folder as both stores)."""
    export_dir = Path(export_path)
    export_dir.mkdir(parents=True, exist_ok=True)
    archives = {node: _archive_file(workflow.name, node, source)
                for node, source in workflow.sources.items()}
    models = {key: (dict(value, url=archives[key].name) if key in archives else value)
              for key, value in workflow.models.items()}
    with tempfile.TemporaryDirectory(prefix=f"nbserve-war-{workflow.name}-") as folder:
        spec = Path(folder, f"{workflow.name}.yaml")
        spec.write_text(yaml.safe_dump({"models": models, "dag": workflow.dag}, sort_keys=False))
        handler = None
        if workflow.functions:
            handler = Path(folder, f"{workflow.name}_handler.py")
            handler.write_text(handler_source(workflow.functions.values()))
        path = archive_workflow(workflow.name, spec, handler, export_path=export_dir,
                                force=force)
    for archive in archives.values():
        if not (export_dir / archive.name).exists():
            shutil.copy2(archive, export_dir / archive.name)
    return path


def _archive_file(workflow: str, node: str, source: Path | ModelArchive) -> Path:
    if isinstance(source, LiveModel):
        raise ArchiveError(f"Workflow {workflow}: node {node} serves a live object, which has "
                           "no archive. %archive it, and name the .mar in models.")
    path = source.source if isinstance(source, ModelArchive) else Path(source)
    if not path.is_file():
        raise ArchiveError(f"Workflow {workflow}: node {node}'s archive {path} is not a file "
                           "(archive the folder with nbserve archive first).")
    return path


def handler_source(functions) -> str:
    """A handler file with ``functions``' source, the helper functions they call from the same
    module, and imports of the modules they use; anything else they read from outside is an
    error (its value would not be in the file)."""
    imports: dict[str, str] = {}
    sources: dict[str, str] = {}
    pending = list(functions)
    while pending:
        function = pending.pop(0)
        if function.__name__ in sources:
            continue
        try:
            sources[function.__name__] = textwrap.dedent(inspect.getsource(function))
        except (OSError, TypeError):
            raise ArchiveError(f"The source of {function.__name__} cannot be found, so it "
                               "cannot be written into the workflow's handler file.") from None
        if function.__code__.co_freevars:
            raise ArchiveError(f"{function.__name__} reads {function.__code__.co_freevars[0]} "
                               "from the function around it: define it inside the function, "
                               "so the handler file has it.")
        for used in _global_names(function.__code__):
            value = function.__globals__.get(used, getattr(builtins, used, None))
            if used in function.__globals__ and isinstance(value, types.ModuleType):
                imports[used] = (f"import {value.__name__}" if value.__name__ == used
                                 else f"import {value.__name__} as {used}")
            elif inspect.isfunction(value) and value.__globals__ is function.__globals__:
                pending.append(value)
            elif used in function.__globals__:
                raise ArchiveError(f"{function.__name__} reads {used}, a "
                                   f"{type(value).__name__} of the notebook: define it inside "
                                   "the function, so the handler file has it.")
    return "\n".join(sorted(imports.values())) + "\n\n\n" + "\n\n".join(sources.values())


def _global_names(code: types.CodeType) -> set[str]:
    """The globals ``code`` reads (attribute names, also in ``co_names``, are not)."""
    names = {i.argval for i in dis.get_instructions(code) if i.opname == "LOAD_GLOBAL"}
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _global_names(constant)
    return names
