"""The metrics API: ``GET /metrics`` in Prometheus' text format, with TorchServe's names.

``ts_inference_requests_total``, ``ts_inference_latency_microseconds`` and
``ts_queue_latency_microseconds`` are TorchServe's counters; ``nbserve_*`` adds what an operator
needs beside them: queue depth, workers, batch sizes, errors by status, latency percentiles.
Metrics a handler adds (``context.metrics``, :mod:`nbserve.handlers.metrics`) are exported
under their own names and dimensions, as TorchServe's ``metrics_mode=prometheus`` exports them.
"""

from __future__ import annotations

import re
import socket

from nbserve.api import system_metrics
from nbserve.api.http.base import APIHandler
from nbserve.handlers.metrics import BUCKETS
from nbserve.logs import UNITS
from nbserve.serving.stats import WINDOW

_FAMILIES = [
    ("ts_inference_requests_total", "counter", "Total number of inference requests."),
    ("ts_inference_latency_microseconds", "counter", "Cumulative inference duration in microseconds"),
    ("ts_queue_latency_microseconds", "counter", "Cumulative queue duration in microseconds"),
    ("nbserve_queue_depth", "gauge", "Requests waiting in a model version's queue."),
    ("nbserve_workers", "gauge", "Workers serving a model version."),
    ("nbserve_batches_total", "counter", "Batches run, by batch size."),
    ("nbserve_errors_total", "counter", "Requests answered with an error, by HTTP status."),
    ("nbserve_request_latency_milliseconds", "summary",
     f"End-to-end latency: percentiles of the last {WINDOW} requests, sum and count of all."),
    ("nbserve_requests_abandoned_total", "counter",
     "Requests dropped unrun because their client closed the connection while they waited."),
    ("nbserve_worker_restarts_total", "counter",
     "Worker processes that died (crashed, killed, timed out) and were started again."),
    ("nbserve_batch_target", "gauge",
     "The batch size a worker's batching policy fills to (nbserve.serving.batch_policy)."),
    ("nbserve_batch_wait_milliseconds", "gauge",
     "How long a worker's batching policy lets a batch wait to fill."),
    ("nbserve_worker_threads", "gauge", "Torch intra-op threads of a worker's latest batch."),
]


def render(engine, mode: str = "log") -> str:
    """Every served version's figures as Prometheus text; with TorchServe's
    ``metrics_mode=legacy``, which logs the rest, without the system and handler metrics."""
    legacy = mode == "legacy"
    hostname = socket.gethostname()
    samples: dict[str, list[str]] = {name: [] for name, _, _ in _FAMILIES}
    handler_families: dict[str, tuple[str, str, list[str]]] = {}
    for model in engine.models():
        for version in model.versions.values():
            labels = (f'model_name="{_label(model.name)}",model_version="{_label(version.version)}",'
                      f'hostname="{_label(hostname)}"')
            stats = version.stats
            samples["ts_inference_requests_total"].append(f"{{{labels}}} {stats.requests}")
            samples["ts_inference_latency_microseconds"].append(f"{{{labels}}} {stats.inference_latency_us:.3f}")
            samples["ts_queue_latency_microseconds"].append(f"{{{labels}}} {stats.queue_latency_us:.3f}")
            samples["nbserve_queue_depth"].append(f"{{{labels}}} {len(version.queue)}")
            samples["nbserve_workers"].append(f"{{{labels}}} {len(version.workers)}")
            samples["nbserve_requests_abandoned_total"].append(
                f"{{{labels}}} {version.queue.abandoned}")
            samples["nbserve_worker_restarts_total"].append(f"{{{labels}}} {stats.worker_restarts}")
            for size, count in sorted(stats.batch_sizes.items()):
                samples["nbserve_batches_total"].append(f'{{{labels},batch_size="{size}"}} {count}')
            for code, count in sorted(stats.errors.items()):
                samples["nbserve_errors_total"].append(f'{{{labels},code="{code}"}} {count}')
            latency = samples["nbserve_request_latency_milliseconds"]
            for quantile in (50, 99):
                value = stats.percentile(quantile)
                if value is not None:
                    latency.append(f'{{{labels},quantile="{quantile / 100}"}} {value:.3f}')
            latency.append(f"_sum{{{labels}}} "
                           f"{(stats.queue_latency_us + stats.inference_latency_us) / 1000:.3f}")
            latency.append(f"_count{{{labels}}} {stats.requests}")
            for worker in list(version.workers):
                worker_labels = f'{labels},worker="{worker.id}"'
                samples["nbserve_batch_target"].append(f"{{{worker_labels}}} {worker.batch_target}")
                samples["nbserve_batch_wait_milliseconds"].append(
                    f"{{{worker_labels}}} {worker.batch_wait_s * 1000:.3f}")
                tuner = getattr(worker, "tuner", None)
                if tuner is not None:
                    samples["nbserve_worker_threads"].append(f"{{{worker_labels}}} {tuner.threads}")
            for metric in [] if legacy else version.handler_metrics.metrics():
                _handler_samples(metric, hostname, handler_families)
    lines = []
    for name, unit, value, dimensions in [] if legacy else system_metrics.latest:
        labels = ",".join(f'{k}="{_label(v)}"' for k, v in dimensions.items())
        lines += [f"# HELP {name} Torchserve prometheus gauge metric with unit: "
                  f"{UNITS.get(unit, unit)}", f"# TYPE {name} gauge",
                  f'{name}{{{labels},Hostname="{_label(hostname)}"}} {value}']
    for name, kind, help_text in _FAMILIES:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        lines += [name + sample for sample in samples[name]]
    for name, (kind, unit, values) in sorted(handler_families.items()):
        lines += [f"# HELP {name} Torchserve prometheus {kind} metric with unit: "
                  f"{UNITS.get(unit, unit)}", f"# TYPE {name} {kind}"]
        lines += values
    return "\n".join(lines) + "\n"


def _handler_samples(metric, hostname: str, families: dict) -> None:
    """A handler's metric as TorchServe's prometheus mode shows it: its dimensions, then
    Hostname, as labels; histograms as buckets, count and sum."""
    name = re.sub(r"[^a-zA-Z0-9_:]", "_", metric.name)
    kind = metric.metric_type.value
    _, _, lines = families.setdefault(name, (kind, metric.unit, []))
    for values, sample in sorted(metric.samples.items()):
        labels = "".join(f'{d}="{_label(v)}",' for d, v in zip(metric.dimension_names, values))
        labels += f'Hostname="{_label(hostname)}"'
        if kind != "histogram":
            lines.append(f"{name}{{{labels}}} {sample}")
            continue
        buckets, count, total = sample
        lines += [f'{name}_bucket{{{labels},le="{le}"}} {n}' for le, n in zip(BUCKETS, buckets)]
        lines += [f'{name}_bucket{{{labels},le="+Inf"}} {count}', f"{name}_count{{{labels}}} {count}",
                  f"{name}_sum{{{labels}}} {total}"]


def _label(value: str) -> str:
    """A Prometheus label value, escaped: a quote or a newline cannot start another sample."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsHandler(APIHandler):
    def get(self):
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(render(self.engine, self.server.config.metrics_mode))
