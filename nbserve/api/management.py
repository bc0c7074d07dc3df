"""TorchServe's management calls, written once: list, describe, register, scale, set the default
version, unregister.

REST (:mod:`nbserve.api.http.management`) and gRPC (:mod:`nbserve.api.grpc.management`) take
their parameters off the wire and call :class:`Management`; its checks, errors and answers are
the same on both, as TorchServe's are. Registering and unregistering need
``enable_model_api=true``, as in TorchServe since its 2023 fixes; an archive ``url`` must be in
the model store or match ``allowed_urls`` (:mod:`nbserve.store.model_store`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from nbserve.config import ServerConfig
from nbserve.errors import BadRequest, MethodNotAllowed, ModelAlreadyRegistered, WorkflowNotFound
from nbserve.serving.engine import Engine
from nbserve.serving.model_config import resolve
from nbserve.serving.model_version import ModelVersion
from nbserve.serving.workflow import Workflow
from nbserve.store.model_store import ModelStore
from nbserve.store.workflow_archive import WorkflowArchive, open_workflow

#: The answer to a call whose workers start (or stop) after it is answered: TorchServe's 202.
PROCESSING = {"status": "Processing worker updates..."}


@dataclass(frozen=True)
class Registration:
    """``POST /models`` and gRPC's RegisterModel: where the archive is, and the settings the
    call gives (None: the archive's model-config.yaml, then the server's defaults)."""

    url: str | None
    model_name: str | None = None
    handler: str | None = None
    batch_size: int | None = None
    max_batch_delay: int | None = None
    initial_workers: int | None = None
    response_timeout: int | None = None
    #: TorchServe's default: answer once the workers run. False answers 202 at once.
    synchronous: bool = True


class Management:
    """The management API of one engine, whichever protocol asks."""

    def __init__(self, engine: Engine, config: ServerConfig, model_store: ModelStore,
                 workflow_store: ModelStore | None = None):
        self.engine = engine
        self.config = config
        self.model_store = model_store
        #: Where ``.war`` files are found (TorchServe's ``workflow_store``, else the model
        #: store), and the workflows registered, by name.
        self.workflow_store = workflow_store or model_store
        self.workflows: dict[str, Workflow] = {}
        self._workflows_lock = threading.Lock()

    def list_models(self, limit: int = 100, start: int = 0) -> dict:
        """``limit`` models from the ``start``-th, and the token of the next page if any."""
        return _page("models", self.engine.models(), limit, start,
                     lambda m: {"modelName": m.name, "modelUrl": m.default.archive.source.name})

    def versions(self, model: str, version: str | None) -> list[ModelVersion]:
        """The versions a describe call names: one (the default if None), or ``all``."""
        if version == "all":
            return list(self.engine.model(model).versions.values())
        return [self.engine.get(model, version)]

    def describe(self, model: str, version: str | None) -> list[dict]:
        return [describe(v) for v in self.versions(model, version)]

    def locate(self, call: Registration, *, over: str = "HTTP", trusted: bool = False) -> Path:
        """The archive a registration names, once the call is allowed (downloaded into the
        model store if it is remote). ``trusted``: a caller allowed to run code anyway (a
        Jupyter user the extension let in)."""
        self.require_model_api("Registering models", over, trusted)
        if not call.url:
            raise BadRequest("Parameter url is required: the archive's name in the model store.")
        return self.model_store.resolve(call.url)

    def register(self, call: Registration, source: Path | None = None, *, over: str = "HTTP",
                 trusted: bool = False) -> tuple[int, dict]:
        """Load the archive (``source``, from :meth:`locate`, or located now) and start its
        workers: ``(status, answer)``."""
        if source is None:
            source = self.locate(call, over=over, trusted=trusted)
        version = self.engine.register(
            source, model_name=call.model_name, handler=call.handler,
            batch_size=call.batch_size, max_batch_delay=call.max_batch_delay,
            initial_workers=call.initial_workers, response_timeout=call.response_timeout,
            wait=call.synchronous)
        if version.config.min_workers == 0:
            return 200, {"status": f'Model "{version.name}" Version: {version.version} '
                                   "registered with 0 initial workers. Use scale workers API "
                                   "to add workers for the model."}
        if call.synchronous:
            return 200, {"status": f'Model "{version.name}" Version: {version.version} '
                                   f"registered with {len(version.workers)} initial workers"}
        return 202, PROCESSING

    def scale(self, model: str, version: str | None, min_worker: int | None,
              max_worker: int | None, synchronous: bool = False) -> tuple[int, dict]:
        """Run ``min_worker`` workers (the current number if None): ``(status, answer)``. Not
        ``synchronous`` (TorchServe's default), it answers 202 once the numbers are checked,
        and the workers start or stop behind the answer."""
        target = self.engine.get(model, version)
        min_workers = target.config.min_workers if min_worker is None else min_worker
        max_workers = (max(min_workers, target.config.max_workers) if max_worker is None
                       else max_worker)
        settings = {"min_workers": min_workers, "max_workers": max_workers}
        if not synchronous:
            resolve(target.config, None, **settings)  # the engine's 400 now, not behind a 202
            threading.Thread(target=self.engine.scale, args=(model, version), kwargs=settings,
                             name=f"nbserve-scale-{model}", daemon=True).start()
            return 202, PROCESSING
        self.engine.scale(model, version, **settings)
        return 200, {"status": f"Workers scaled to {min_workers} for model: {model}"}

    def set_default(self, model: str, version: str) -> dict:
        self.engine.set_default(model, version)
        return {"status": f'Default version successfully updated for model "{model}" to '
                          f'"{version}"'}

    def unregister(self, model: str, version: str | None, *, over: str = "HTTP",
                   trusted: bool = False) -> dict:
        """Stop serving a version once its queue is answered."""
        self.require_model_api("Unregistering models", over, trusted)
        self.engine.get(model, version)  # 404 before anything is done
        self.engine.unregister(model, version)
        return {"status": f'Model "{model}" unregistered'}

    # TorchServe's workflows (nbserve.serving.workflow), with the same keys and model API.

    def list_workflows(self, limit: int = 100, start: int = 0) -> dict:
        workflows = [self.workflows[name] for name in sorted(self.workflows)]
        return _page("workflows", workflows, limit, start,
                     lambda w: {"workflowName": w.name, "workflowUrl": w.archive.source.name})

    def workflow(self, name: str) -> Workflow:
        try:
            return self.workflows[name]
        except KeyError:
            raise WorkflowNotFound(f"Workflow not found: {name}") from None

    def describe_workflow(self, name: str) -> list[dict]:
        archive = self.workflow(name).archive
        settings = archive.settings
        dag = ", ".join(f"{node}=[{', '.join(children)}]"  # as Java prints the spec's map
                        for node, children in archive.dag.items() if children)
        return [{"workflowName": name, "workflowUrl": archive.source.name,
                 "minWorkers": settings["min-workers"], "maxWorkers": settings["max-workers"],
                 "batchSize": settings["batch-size"], "maxBatchDelay": settings["max-batch-delay"],
                 "workflowDag": "{" + dag + "}"}]

    def register_workflow(self, url: str | None, name: str | None, *, over: str = "HTTP",
                          trusted: bool = False) -> dict:
        """Open the ``.war`` and serve each of its nodes; TorchServe's answer."""
        self.require_model_api("Registering workflows", over, trusted)
        if not url:
            raise BadRequest("Parameter url is required.")
        workflow = self.add_workflow(open_workflow(self.workflow_store.resolve(url), name),
                                     self.model_store.resolve)
        return {"status": f"Workflow {workflow.name} has been registered and scaled "
                          "successfully."}

    def add_workflow(self, archive: WorkflowArchive,
                     resolve: Callable[[str], Path]) -> Workflow:
        """Serve ``archive``'s nodes (their archives found by ``resolve``) as one workflow."""
        with self._workflows_lock:
            if archive.name in self.workflows:
                raise ModelAlreadyRegistered(f"Workflow {archive.name} is already registered.")
            workflow = self.workflows[archive.name] = Workflow(archive, self.engine)
        try:
            workflow.register(resolve)
        except BaseException:
            del self.workflows[archive.name]
            raise
        return workflow

    def unregister_workflow(self, name: str, *, over: str = "HTTP",
                            trusted: bool = False) -> dict:
        self.require_model_api("Unregistering workflows", over, trusted)
        with self._workflows_lock:
            workflow = self.workflow(name)
            del self.workflows[name]
        workflow.unregister()
        return {"status": f'Workflow "{name}" unregistered'}

    def require_model_api(self, what: str, over: str, trusted: bool = False) -> None:
        if not (trusted or self.config.enable_model_api):
            raise refuse_model_api(what, over)


def refuse_model_api(what: str, over: str = "HTTP") -> MethodNotAllowed:
    """The refusal, starting with TorchServe's own words for it (which clients match)."""
    theirs = ("Requested method is not allowed, please refer to API document." if over == "HTTP"
              else "Model API disabled:")
    return MethodNotAllowed(f"{theirs} {what} over {over} is off: set enable_model_api=true in "
                            "config.properties to allow it.")


def _page(key: str, items: list, limit: int, start: int, entry: Callable) -> dict:
    """TorchServe's paged list: ``limit`` entries from the ``start``-th, and the token of the
    next page if there is one."""
    answer = {}
    if start + limit < len(items):
        answer["nextPageToken"] = str(start + limit)
    answer[key] = [entry(item) for item in items[start:start + limit]]
    return answer


def describe(version: ModelVersion) -> dict:
    """TorchServe's describe-model JSON for one version."""
    config = version.config
    return {
        "modelName": version.name,
        "modelVersion": version.version,
        "modelUrl": version.archive.source.name,
        "runtime": version.archive.runtime,
        "minWorkers": config.min_workers,
        "maxWorkers": config.max_workers,
        "batchSize": config.batch_size,
        "maxBatchDelay": int(config.max_batch_delay),
        "responseTimeout": int(config.response_timeout),
        "startupTimeout": int(config.startup_timeout),
        "maxRetryTimeoutInSec": int(config.max_retry_timeout),
        "clientTimeoutInMills": 0,
        "parallelType": "",
        "parallelLevel": 0,
        "deviceType": "gpu" if config.gpu_ids else "cpu",
        "continuousBatching": config.continuous_batching,
        "useJobTicket": False,
        "useVenv": False,
        "stateful": config.sequence_batching,
        # TorchServe reads these only for a model whose sequences may idle.
        **({"sequenceMaxIdleMSec": int(config.sequence_max_idle_ms),
            "sequenceTimeoutMSec": int(config.sequence_timeout_ms),
            "maxNumSequence": version.sequences.max_sequences if version.sequences else
            max(config.max_num_sequence, config.batch_size * config.max_workers),
            "maxSequenceJobQueueSize": config.max_sequence_job_queue_size}
           if config.sequence_max_idle_ms > 0 else
           dict.fromkeys(("sequenceMaxIdleMSec", "sequenceTimeoutMSec", "maxNumSequence",
                          "maxSequenceJobQueueSize"), 0)),
        "loadedAtStartup": False,
        "workers": [
            {
                "id": str(w.id),
                "startTime": w.start_time.isoformat(timespec="milliseconds").replace("+00:00", "Z")
                if w.start_time else None,
                "status": w.status,
                "memoryUsage": 0,
                "pid": w.pid,
                "gpu": w.gpu_id is not None,
                "gpuUsage": "N/A",
            }
            for w in version.workers
        ],
        "jobQueueStatus": {
            "remainingCapacity": config.job_queue_size - len(version.queue),
            "pendingRequests": len(version.queue),
        },
    }
