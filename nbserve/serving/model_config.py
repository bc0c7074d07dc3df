"""Per-model settings: nbserve's defaults for this machine, model-config.yaml, then arguments.

The names are TorchServe's (``batch_size``, ``max_batch_delay``, ``min_workers``...), and
``model-config.yaml`` is read with TorchServe's camelCase keys (``batchSize``,
``maxBatchDelay``, ``minWorkers``...). Where nothing is set, the defaults are chosen to reach
the hardware's throughput: one worker per GPU (one on a CPU, whose threads already use every
core), batches of whatever is waiting up to ``batch_size``, and no delay that would cost a
lone caller latency.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

from nbserve.errors import BadRequest

logger = logging.getLogger(__name__)

#: model-config.yaml keys, by the ModelConfig field they set.
YAML_KEYS = {
    "batch_size": "batchSize",
    "max_batch_delay": "maxBatchDelay",
    "min_workers": "minWorkers",
    "max_workers": "maxWorkers",
    "response_timeout": "responseTimeout",
    "startup_timeout": "startupTimeout",
    "max_retry_timeout": "maxRetryTimeoutInSec",
    "job_queue_size": "jobQueueSize",
    "device_type": "deviceType",
    "device_ids": "deviceIds",
    "isolation": "isolation",
    "preprocess_threads": "preprocessThreads",
    "continuous_batching": "continuousBatching",
    "sequence_batching": "sequenceBatching",
    "sequence_max_idle_ms": "sequenceMaxIdleMSec",
    "sequence_timeout_ms": "sequenceTimeoutMSec",
    "max_num_sequence": "maxNumSequence",
    "max_sequence_job_queue_size": "maxSequenceJobQueueSize",
}


#: model-config.yaml keys of TorchServe's frontend that nbserve does not apply, and why; each
#: one set is named in a warning when the model loads. Other keys are the handler's own.
YAML_NOT_APPLIED = {
    "clientTimeoutInMills": "responseTimeout bounds a request",
    "parallelType": "models are not split across devices (pipeline or tensor parallelism)",
    "parallelLevel": "models are not split across devices",
    "deployType": "models are not split across devices",
    "torchrun": "models are not launched with torchrun",
    "useJobTicket": "requests wait in the queue up to jobQueueSize",
    "useVenv": "handlers run in this process's environment",
    "asyncCommunication": "an async def handle runs to the end of each batch on its "
                          "worker's event loop; a worker process answers each request as it "
                          "is done",
}


#: How a model's workers may run: in processes of their own, or as threads of the server's.
ISOLATIONS = ("process", "thread")


@dataclass(frozen=True)
class ModelConfig:
    """How one model version is served."""

    #: Most requests one handler call gets.
    batch_size: int = 4
    #: The most milliseconds a batch may wait to fill: a ceiling on what the batching policy
    #: (nbserve.serving.batch_policy) decides; 0 leaves the wait to the policy alone.
    max_batch_delay: float = 0
    min_workers: int = 1
    max_workers: int = 1
    #: Seconds a request may take, queue included, before it is answered 408.
    response_timeout: float = 120
    #: Seconds a worker process may take to load the handler before it is killed and started
    #: again (TorchServe's default); a worker thread cannot be stopped, and is only logged.
    startup_timeout: float = 120
    #: Seconds a model registered behind a 202 keeps trying to start its workers, with
    #: TorchServe's backoff, before it is removed (a worker process that dies once it has
    #: run is restarted without a limit).
    max_retry_timeout: float = 300
    #: Requests that may wait; past that, 503 with Retry-After.
    job_queue_size: int = 1000
    #: "gpu" or "cpu"; "gpu" falls back to the CPU where there is none.
    device_type: str = "gpu"
    device_ids: tuple[int, ...] | None = None
    limit_max_image_pixels: bool = True
    #: Where workers run: "thread" (in this process) or "process" (one each, restarted when
    #: it dies; see nbserve.serving.process.supervisor).
    isolation: str = "thread"
    #: Threads preprocessing each worker's requests (see nbserve.serving.worker); None: the CPUs this
    #: process may use, shared among the workers, less one for a forward pass on the CPU.
    preprocess_threads: int | None = None
    #: TorchServe's continuous batching: each ``handle`` call one step of every running
    #: request, new ones joining between steps (nbserve.serving.loops.ContinuousLoop).
    continuous_batching: bool = False
    #: TorchServe's sequence batching (stateful models, nbserve.serving.sequences): on when
    #: ``sequenceBatching`` is true and a sequence may idle (``sequenceMaxIdleMSec`` > 0).
    sequence_batching: bool = False
    sequence_max_idle_ms: float = 0
    #: How long a sequence may last in all; 0: no limit.
    sequence_timeout_ms: float = 0
    #: Sequences served at once: at least ``batch_size`` x ``max_workers``, as in TorchServe.
    max_num_sequence: int = 0
    #: Requests of one sequence that may wait behind the one being answered.
    max_sequence_job_queue_size: int = 1
    #: The whole model-config.yaml, which handlers read as ``context.model_yaml_config``.
    yaml: dict = field(default_factory=dict, compare=False)

    @property
    def sequences(self) -> bool:
        """Whether requests are batched by sequence (TorchServe needs both settings too)."""
        return self.sequence_batching and self.sequence_max_idle_ms > 0

    @property
    def gpu_ids(self) -> list[int]:
        """The GPUs workers are placed on, round robin; empty on CPU."""
        if self.device_type == "cpu" or not torch.cuda.is_available():
            return []
        return list(self.device_ids) if self.device_ids else list(range(torch.cuda.device_count()))


def machine_defaults(number_of_gpu: int | None = None) -> ModelConfig:
    """nbserve's defaults for the hardware this process sees, on at most ``number_of_gpu``
    GPUs (config.properties' key; 0 keeps every model on the CPU)."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if number_of_gpu is not None:
        gpus = min(gpus, number_of_gpu)
        if gpus == 0:
            return ModelConfig(batch_size=4, min_workers=1, max_workers=1, device_type="cpu")
    if gpus:
        return ModelConfig(batch_size=32, min_workers=gpus, max_workers=gpus,
                           device_ids=tuple(range(gpus)))
    # Batches of 4 measured best for both densenet161 and mobilenet_v3_small in a worker on a
    # 2-core CPU (bench/RESULTS.md).
    return ModelConfig(batch_size=4, min_workers=1, max_workers=1)


def resolve(base: ModelConfig, model_yaml: dict | None, **overrides: Any) -> ModelConfig:
    """``base``, then what model-config.yaml sets, then the non-None ``overrides``."""
    values: dict[str, Any] = {}
    for name, key in YAML_KEYS.items():
        if model_yaml and key in model_yaml:
            values[name] = model_yaml[key]
    for key in set(model_yaml or {}) & set(YAML_NOT_APPLIED):
        logger.warning("model-config.yaml key %r is not applied: %s.", key, YAML_NOT_APPLIED[key])
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "min_workers" in values and "max_workers" not in values:
        values["max_workers"] = max(values["min_workers"], base.max_workers)
    known = {f.name for f in fields(ModelConfig)}
    unknown = set(values) - known
    if unknown:
        raise BadRequest(f"Unknown model settings: {', '.join(sorted(unknown))}.")
    config = replace(base, yaml=dict(model_yaml or {}), **_typed(values))
    _check(config)
    return config


def _typed(values: dict) -> dict:
    converters = {"batch_size": int, "min_workers": int, "max_workers": int, "job_queue_size": int,
                  "max_batch_delay": float, "response_timeout": float,
                  "startup_timeout": float, "max_retry_timeout": float, "sequence_batching": _yaml_bool,
                  "continuous_batching": _yaml_bool,
                  "sequence_max_idle_ms": float, "sequence_timeout_ms": float,
                  "max_num_sequence": int, "max_sequence_job_queue_size": int, "device_type": str,
                  "isolation": str, "preprocess_threads": int, "device_ids": lambda v: tuple(int(i) for i in v), "limit_max_image_pixels": bool}
    typed = {}
    for name, value in values.items():
        try:
            typed[name] = converters[name](value) if name in converters else value
        except (TypeError, ValueError):
            raise BadRequest(f"Invalid value for {name}: {value!r}.") from None
    return typed


def _yaml_bool(value) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() == "true"


def _check(config: ModelConfig) -> None:
    if config.batch_size < 1:
        raise BadRequest(f"batch_size must be at least 1, not {config.batch_size}.")
    if config.max_batch_delay < 0:
        raise BadRequest(f"max_batch_delay must be 0 or more milliseconds, not {config.max_batch_delay}.")
    if config.min_workers < 0 or config.max_workers < config.min_workers:
        raise BadRequest(
            f"Workers must satisfy 0 <= min_workers <= max_workers "
            f"(got {config.min_workers} and {config.max_workers}).")
    if config.response_timeout <= 0:
        raise BadRequest(f"response_timeout must be positive, not {config.response_timeout}.")
    if config.startup_timeout <= 0:
        raise BadRequest(f"startup_timeout must be positive, not {config.startup_timeout}.")
    if config.job_queue_size < 1:
        raise BadRequest(f"job_queue_size must be at least 1, not {config.job_queue_size}.")
    if config.preprocess_threads is not None and config.preprocess_threads < 1:
        raise BadRequest(f"preprocess_threads must be at least 1, not {config.preprocess_threads}.")
    if config.isolation not in ISOLATIONS:
        raise BadRequest(f"isolation must be 'process' or 'thread', not {config.isolation!r}.")
    if config.device_type not in ("cpu", "gpu"):
        raise BadRequest(f"deviceType must be 'cpu' or 'gpu', not {config.device_type!r}.")
