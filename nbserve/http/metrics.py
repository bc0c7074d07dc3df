"""The metrics API: ``GET /metrics`` in Prometheus' text format, with TorchServe's names.

``ts_inference_requests_total``, ``ts_inference_latency_microseconds`` and
``ts_queue_latency_microseconds`` are TorchServe's counters; ``nbserve_*`` adds what an operator
needs beside them: queue depth, workers, batch sizes, errors by status, latency percentiles.
Metrics a handler adds (``context.metrics.add_time(...)``) are exported under their own names.
"""

from __future__ import annotations

import re
import socket

from nbserve.http.base import APIHandler

_FAMILIES = [
    ("ts_inference_requests_total", "counter", "Total number of inference requests."),
    ("ts_inference_latency_microseconds", "counter", "Cumulative inference duration in microseconds"),
    ("ts_queue_latency_microseconds", "counter", "Cumulative queue duration in microseconds"),
    ("nbserve_queue_depth", "gauge", "Requests waiting in a model version's queue."),
    ("nbserve_workers", "gauge", "Workers serving a model version."),
    ("nbserve_batches_total", "counter", "Batches run, by batch size."),
    ("nbserve_errors_total", "counter", "Requests answered with an error, by HTTP status."),
    ("nbserve_request_latency_milliseconds", "gauge",
     "End-to-end latency percentiles over the last 2048 requests."),
    ("nbserve_worker_threads", "gauge", "Torch intra-op threads of a worker's latest batch."),
]


def render(engine) -> str:
    """Every served version's figures as Prometheus text."""
    hostname = socket.gethostname()
    samples: dict[str, list[str]] = {name: [] for name, _, _ in _FAMILIES}
    handler_samples: dict[str, list[str]] = {}
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
            for size, count in sorted(stats.batch_sizes.items()):
                samples["nbserve_batches_total"].append(f'{{{labels},batch_size="{size}"}} {count}')
            for code, count in sorted(stats.errors.items()):
                samples["nbserve_errors_total"].append(f'{{{labels},code="{code}"}} {count}')
            for quantile in (50, 99):
                value = stats.percentile(quantile)
                if value is not None:
                    samples["nbserve_request_latency_milliseconds"].append(
                        f'{{{labels},quantile="{quantile / 100}"}} {value:.3f}')
            for worker in list(version.workers):
                tuner = getattr(worker, "tuner", None)
                if tuner is not None:
                    worker_labels = f'{labels},worker="{worker.id}"'
                    samples["nbserve_worker_threads"].append(f"{{{worker_labels}}} {tuner.threads}")
            for name, (value, unit, _) in version.handler_metrics.values.items():
                metric = re.sub(r"[^a-zA-Z0-9_:]", "_", name)
                handler_samples.setdefault(metric, []).append(
                    f'{{{labels},unit="{_label(str(unit))}"}} {value}')
    lines = []
    for name, kind, help_text in _FAMILIES:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        lines += [name + sample for sample in samples[name]]
    for name, values in sorted(handler_samples.items()):
        lines += [f"# HELP {name} Added by the handler.", f"# TYPE {name} gauge"]
        lines += [name + sample for sample in values]
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    """A Prometheus label value, escaped: a quote or a newline cannot start another sample."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsHandler(APIHandler):
    def get(self):
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(render(self.engine))
