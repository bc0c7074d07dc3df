"""Deploying archives to Ray Serve from a notebook kernel or ``nbserve serve``.

What this process deploys lives as long as it does: the archives reach the replicas through
Ray's object store, owned here, so :meth:`RayServing.shutdown` (also run at exit) deletes the
applications it deployed, as ``%serve --stop`` and Ctrl-C on ``nbserve serve`` stop local serving.
"""

from __future__ import annotations

import asyncio
import atexit
import io
import logging
import os
import re
import threading
import time
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

import ray
from ray import serve

from nbserve.api.startup import startup_archives
from nbserve.api.tokens import TokenAuthorization
from nbserve.config import ServerConfig
from nbserve.errors import BadRequest, ModelNotFound, NBServeError
from nbserve.ray_serve.applications import INGRESS_APP, MODEL_APP_PREFIX, app_name, deployment_state
from nbserve.ray_serve.ingress import Ingress
from nbserve.ray_serve.replica import ModelReplica, call_replica
from nbserve.serving.queue import Prediction
from nbserve.store.archive import ModelArchive, check_model_name, open_archive

#: Requests a replica takes at once (Ray's ``max_ongoing_requests``); its engine batches them.
MAX_ONGOING_REQUESTS = 64
#: Seconds a model's replicas may take to start before deploying it is given up.
STARTUP_TIMEOUT = 120
#: Where Ray Serve's HTTP proxy listens unless told (Ray's own default).
DEFAULT_HTTP_ADDRESS = "http://127.0.0.1:8000"
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
#: Ray Serve logs every request at INFO in each replica; that is the proxy's job here.
_LOGGING = {"enable_access_log": False}


@dataclass(frozen=True)
class RayModel:
    """A model deployed from here, and what it was deployed with (to deploy it again)."""

    name: str
    version: str
    #: The archive's bytes, or a reference to them in Ray's object store.
    archive: ray.ObjectRef | bytes
    filename: str
    #: Engine settings for each replica (batch_size, max_batch_delay, ...).
    settings: dict
    replicas: int = 1
    #: Autoscaling bounds; with either set, Ray scales between them and ``replicas`` is unused.
    min_replicas: int | None = None
    max_replicas: int | None = None
    num_cpus: float = 1
    num_gpus: float = 0

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas is not None or self.max_replicas is not None

    def deployment_options(self) -> dict:
        """Ray Serve's options for this model's deployment."""
        options = dict(name=self.name, max_ongoing_requests=MAX_ONGOING_REQUESTS,
                       ray_actor_options={"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
                       logging_config=_LOGGING, max_constructor_retry_count=3)
        if self.autoscaling:
            low, high = self.autoscaling_bounds
            options["autoscaling_config"] = {"min_replicas": low, "max_replicas": high}
        else:
            options["num_replicas"] = self.replicas
        return options

    @property
    def resources(self) -> str:
        """What each replica holds: ``1 CPU``, ``1 CPU, 1 GPU``."""
        return f"{self.num_cpus:g} CPU" + (f", {self.num_gpus:g} GPU" if self.num_gpus else "")

    @property
    def autoscaling_bounds(self) -> tuple[int, int]:
        """Fewest and most replicas, where only one bound was given: 1, or the other bound."""
        low = self.min_replicas if self.min_replicas is not None else 1
        return low, self.max_replicas if self.max_replicas is not None else max(low, 1)

    def describe_placement(self) -> str:
        if self.autoscaling:
            count = "{}-{} replicas".format(*self.autoscaling_bounds)
        else:
            count = f"{self.replicas} replica{'s' * (self.replicas != 1)}"
        return f"{count}, {self.resources} each"


class RayServing:
    """nbserve's models on a Ray cluster, deployed from this process."""

    def __init__(self, address: str | None = None, *, http_address: str | None = None,
                 config: ServerConfig | None = None,
                 key_file: str | os.PathLike = "key_file.json"):
        """Connect to the cluster at ``address`` (``ray://head:10001``, ``auto``...; a new
        private local one if None and ``RAY_ADDRESS`` is unset), start Serve's proxy at
        ``http_address`` if Serve is not running yet, and deploy the ingress if it is not there.
        With token authorization on, the ingress's keys are written to ``key_file``."""
        config = config or ServerConfig()
        self._started_ray = False
        if not ray.is_initialized():
            local = address is None and "RAY_ADDRESS" not in os.environ
            # A local cluster is a new one ("local": never one named in /tmp/ray, which any
            # local user can write), started without Ray's dashboard: its Jobs API on
            # 127.0.0.1:8265 takes no credentials, so any local user could run code there.
            options = {"include_dashboard": False} if local else {}
            ray.init(address="local" if local else address, logging_level=logging.WARNING,
                     log_to_driver=False, **options)
            self._started_ray = local
        parts = urlsplit(http_address or DEFAULT_HTTP_ADDRESS)
        serve.start(http_options={"host": parts.hostname, "port": parts.port})
        self.url = _proxy_url()
        self.response_timeout = config.default_response_timeout
        #: Seconds a deployment may take to have its replicas running (TorchServe's default).
        self.startup_timeout = STARTUP_TIMEOUT
        self.models: dict[str, RayModel] = {}
        self._handles: dict[str, object] = {}
        self._calls = ThreadPoolExecutor(max_workers=16, thread_name_prefix="nbserve-ray")
        self._lock = threading.RLock()
        #: The keys the ingress asks for (the running ingress's, if another deployer started
        #: it), in ``key_file``; None with token authorization off.
        self.tokens: TokenAuthorization | None = None
        if config.token_authorization:
            self.tokens = TokenAuthorization(key_file, None, keys=self._running_ingress_keys())
        self._ingress = Ingress.options(
            ray_actor_options={"num_cpus": 0}, max_ongoing_requests=config.job_queue_size,
            logging_config=_LOGGING,
        ).bind(config, _proxy_url(bound=True), self.tokens.keys if self.tokens is not None else None)
        self._ensure_ingress()
        atexit.register(self.shutdown)

    def _running_ingress_keys(self) -> dict[str, str] | None:
        """The keys of an ingress another deployer runs on this cluster, if one does: its users
        and ours hold the same keys. Asked from the call pool, as predictions are: a handle's
        synchronous ``result()`` refuses to run where an event loop does (a kernel's thread)."""
        if INGRESS_APP not in serve.status().applications:
            return None
        call = call_replica(serve.get_app_handle(INGRESS_APP), "keys",
                            timeout=self.startup_timeout)
        return self._calls.submit(asyncio.run, call).result()

    def _ensure_ingress(self) -> None:
        """Deploy the ingress unless it runs (another deployer's shutdown may have deleted it)."""
        if INGRESS_APP not in serve.status().applications:
            serve.run(self._ingress, name=INGRESS_APP, route_prefix="/")

    def deploy(self, source: str | os.PathLike | ModelArchive, *, model_name: str | None = None,
               replicas: int = 1, min_replicas: int | None = None,
               max_replicas: int | None = None, num_cpus: float = 1, num_gpus: float = 0,
               **settings) -> RayModel:
        """Deploy an archive as its own Serve application; deploying a name again replaces it
        (Ray rolls the replicas over, answering requests in flight first).

        ``settings`` are each replica's engine settings, as :meth:`Engine.register` takes them.
        """
        # Opened here, so a bad archive fails once, not in every replica.
        archive = source if isinstance(source, ModelArchive) else open_archive(source)
        name = check_model_name(model_name or archive.model_name, BadRequest)
        filename, data = _archive_bytes(archive.source)
        model = RayModel(name, str(settings.pop("version", None) or archive.version or "1.0"),
                         _shared(data), filename,
                         {k: v for k, v in settings.items() if v is not None},
                         replicas=replicas, min_replicas=min_replicas, max_replicas=max_replicas,
                         num_cpus=num_cpus, num_gpus=num_gpus)
        return self._run(model)

    def deploy_models(self, config: ServerConfig, models: list[str], **placement) -> list[RayModel]:
        """``--models`` (or ``load_models``) as ``nbserve serve`` reads them, each deployed with
        ``placement`` (replicas, num_cpus, ...)."""
        return [self.deploy(archive, **settings, **placement)
                for archive, settings in startup_archives(config, models)]

    def scale(self, model_name: str, replicas: int | None = None, *,
              min_replicas: int | None = None, max_replicas: int | None = None) -> RayModel:
        """Run ``replicas`` replicas of a model (or autoscale between the bounds)."""
        model = self.model(model_name)
        return self._run(replace(model, replicas=replicas or model.replicas,
                                 min_replicas=min_replicas, max_replicas=max_replicas))

    def _run(self, model: RayModel) -> RayModel:
        self._ensure_ingress()
        deployment = ModelReplica.options(**model.deployment_options())
        bound = deployment.bind(model.archive, model.filename, model.name,
                                {"version": model.version, **model.settings})
        serve.run_many([serve.RunTarget(bound, name=app_name(model.name), route_prefix=None)],
                       wait_for_ingress_deployment_creation=False,
                       wait_for_applications_running=False)
        try:
            self._wait_running(model.name)
        except NBServeError:
            self.undeploy(model.name)
            raise
        with self._lock:
            self.models[model.name] = model
            self._handles.pop(model.name, None)
        return model

    def _wait_running(self, model_name: str) -> None:
        """Until Ray says the model's replicas run; its reason if they fail or are not
        placed within :attr:`startup_timeout` (too few free CPUs or GPUs, say)."""
        deadline = time.monotonic() + self.startup_timeout
        while True:
            application = serve.status().applications.get(app_name(model_name))
            status = str(application.status.value) if application else "DELETED"
            if status == "RUNNING":
                return
            if status in ("DEPLOY_FAILED", "DELETED") or time.monotonic() > deadline:
                reasons = [application.message] if application and application.message else []
                if application:
                    reasons += [d.message for d in application.deployments.values() if d.message]
                waited = "" if status != "DEPLOYING" else f" within {self.startup_timeout:g} s"
                reason = _ANSI_ESCAPE.sub("", "\n".join(reasons)) or status
                raise NBServeError(f"{model_name} did not start on Ray{waited}: {reason}")
            time.sleep(0.5)

    def undeploy(self, model_name: str) -> None:
        """Delete a model's application; its replicas answer what they hold first."""
        serve.delete(app_name(model_name))
        with self._lock:
            self.models.pop(model_name, None)
            self._handles.pop(model_name, None)

    def model(self, model_name: str) -> RayModel:
        model = self.models.get(model_name)
        if model is None:
            raise ModelNotFound(f"Model not found on Ray: {model_name} (deployed from here: "
                                f"{', '.join(sorted(self.models)) or 'none'})")
        return model

    def state(self, model_name: str) -> dict:
        """The model's deployment status and its replicas by state, as Ray Serve tells them."""
        return deployment_state(serve.status().applications, model_name)

    def submit(self, model_name: str, inputs: dict, *, version: str | None = None,
               headers: dict | None = None) -> Future:
        """Send one request to a model's replicas; the future resolves to a Prediction."""
        self.model(model_name)
        with self._lock:
            handle = self._handles.get(model_name)
            if handle is None:
                handle = self._handles[model_name] = serve.get_app_handle(app_name(model_name))
        call = call_replica(handle, "predict", inputs, headers, version,
                            timeout=self.response_timeout)
        return self._calls.submit(asyncio.run, call)

    def predict(self, model_name: str, data, *, version: str | None = None):
        """One input through a model on Ray; its answer, as the HTTP API sends it."""
        prediction: Prediction = self.submit(model_name, {"body": data}, version=version).result()
        return prediction.value

    def shutdown(self) -> None:
        """Delete what was deployed from here (and the ingress, once no model is left)."""
        atexit.unregister(self.shutdown)
        if not ray.is_initialized():
            return
        for name in list(self.models):
            self.undeploy(name)
        applications = serve.status().applications
        if not any(name.startswith(MODEL_APP_PREFIX) for name in applications):
            serve.delete(INGRESS_APP)
        self._calls.shutdown(wait=False)
        if self.tokens is not None:
            self.tokens.remove()
        if self._started_ray:
            serve.shutdown()
            ray.shutdown()


def _archive_bytes(path: Path) -> tuple[str, bytes]:
    """An archive's file name and bytes; a folder (``--archive-format no-archive``) zipped."""
    if path.is_file():
        return path.name, path.read_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zipped:
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            zipped.write(file, file.relative_to(path).as_posix())
    return f"{path.name}.mar", buffer.getvalue()


def _shared(data: bytes):
    """The archive as replicas receive it: a reference into Ray's object store, so it crosses
    the cluster once per node; through Ray Client (``ray://``), whose references replicas
    cannot resolve, the bytes themselves, kept by Serve's controller."""
    if ray.util.client.ray.is_connected():
        return data
    return ray.put(data)


def _proxy_url(bound: bool = False) -> str:
    """Where Ray's proxy answers (``bound``: the address it listens on, ``0.0.0.0`` say)."""
    # Ray has no public getter for its proxy's address (serve.start ignores new options when
    # Serve already runs), so ask what its controller was started with.
    options = serve.context._get_global_client().http_config
    host = options.host if bound or options.host not in ("0.0.0.0", "::") else "127.0.0.1"
    return f"http://{host}:{options.port}"
