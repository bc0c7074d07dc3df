"""Metrics handlers add, as TorchServe's ``ts.metrics`` has them: ``context.metrics``.

Handlers written for TorchServe use this API unchanged::

    from ts.metrics.dimension import Dimension
    from ts.metrics.metric_type_enum import MetricTypes

    counter = context.metrics.add_metric_to_cache(
        metric_name="InferenceRequestCount", unit="count", dimension_names=[],
        metric_type=MetricTypes.COUNTER)
    counter.add_or_update(value=1, dimension_values=[])
    context.metrics.add_time("HandlerMethodTime", 12.5, None, "ms",
                             dimensions=[Dimension("MethodName", "preprocess")])

The metrics API shows them as TorchServe's ``metrics_mode=prometheus`` does: the metric's own
name, its dimensions as labels (``ModelName`` and ``Level`` added where ``add_*`` calls leave
them out) and ``Hostname``; counters and gauges as they are, histograms with Prometheus'
default buckets. ``metrics_config`` (TorchServe's metrics.yaml) declares metrics in advance, as
``get_metric`` expects.
"""

from __future__ import annotations

import bisect
import enum
import threading

import yaml

#: Prometheus' default histogram buckets, as TorchServe's Java client has them.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


class MetricTypes(enum.Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


class Dimension:
    """A metric's label: a name and this sample's value."""

    def __init__(self, name: str, value: str):
        self.name, self.value = name, value

    def __str__(self) -> str:
        return f"{self.name}:{self.value}"

    def to_dict(self) -> dict:
        return {"Name": self.name, "Value": self.value}


class MetricsCacheError(Exception):
    """A metric used against its declaration: not declared, or with other dimensions."""


class CachingMetric:
    """One metric: its samples by dimension values."""

    def __init__(self, name: str, unit: str, dimension_names: list[str], metric_type: MetricTypes,
                 on_update=None):
        self.name, self.unit, self.metric_type = name, unit, metric_type
        self.dimension_names = list(dimension_names)
        #: Called with each update, in a worker process: how the server's cache learns of it.
        self.on_update = on_update
        #: Dimension values -> value (counters, gauges) or [bucket counts, count, sum].
        self.samples: dict[tuple[str, ...], object] = {}
        self._lock = threading.Lock()

    def add_or_update(self, value, dimension_values=(), request_id=""):
        """Add to a counter, set a gauge, observe into a histogram."""
        if len(dimension_values) != len(self.dimension_names):
            raise MetricsCacheError(
                f"Metric {self.name} has dimensions {self.dimension_names}; "
                f"{len(dimension_values)} values were given.")
        key = tuple(str(v) for v in dimension_values)
        value = float(value)
        with self._lock:
            if self.metric_type is MetricTypes.COUNTER:
                self.samples[key] = self.samples.get(key, 0.0) + value
            elif self.metric_type is MetricTypes.GAUGE:
                self.samples[key] = value
            else:
                buckets, count, total = self.samples.get(key, ([0] * len(BUCKETS), 0, 0.0))
                for i in range(bisect.bisect_left(BUCKETS, value), len(BUCKETS)):
                    buckets[i] += 1
                self.samples[key] = (buckets, count + 1, total + value)
        if self.on_update is not None:
            self.on_update(self, value, list(key))

    update = add_or_update


class HandlerMetrics:
    """A model version's metrics cache, shared by its workers (``context.metrics``)."""

    def __init__(self, model_name: str = "", config_file: str | None = None, on_update=None,
                 auto_detect: bool = False):
        self.model_name = model_name
        self.config_file = config_file
        self.request_ids = None
        self._metrics: dict[tuple[str, MetricTypes], CachingMetric] = {}
        self._lock = threading.Lock()
        #: What a metrics.yaml declares: with one, as in TorchServe, only those are exported
        #: (logged, and on the metrics API) unless ``model_metrics_auto_detect`` is on.
        self._declared: set[tuple[str, MetricTypes]] | None = None
        #: Given every update of every exported metric (see :class:`CachingMetric`), if set.
        self.on_update = on_update and self._exported_updates(on_update)
        if config_file:
            self._declare(config_file)
            if not auto_detect:
                self._declared = set(self._metrics)

    def _exported_updates(self, on_update):
        def exported(metric: CachingMetric, value, dimension_values) -> None:
            if self._exports(metric.name, metric.metric_type):
                on_update(metric, value, dimension_values)
        return exported

    def _exports(self, name: str, kind: MetricTypes) -> bool:
        return self._declared is None or (name, kind) in self._declared

    def _declare(self, config_file: str) -> None:
        """The ``model_metrics`` of a TorchServe metrics.yaml, declared in advance."""
        with open(config_file) as f:
            spec = yaml.safe_load(f) or {}
        for kind, metrics in (spec.get("model_metrics") or {}).items():
            for metric in metrics or []:
                self.add_metric_to_cache(metric["name"], metric.get("unit", ""),
                                         metric.get("dimensions") or [], MetricTypes(kind))

    def metrics(self) -> list[CachingMetric]:
        """The metrics exported."""
        with self._lock:
            return [m for key, m in self._metrics.items() if self._exports(*key)]

    def add_metric_to_cache(self, metric_name: str, unit: str, dimension_names: list = (),
                            metric_type: MetricTypes = MetricTypes.COUNTER) -> CachingMetric:
        """Declare a metric (replacing one of that name and type); emits nothing yet."""
        metric = CachingMetric(metric_name, unit, list(dimension_names), metric_type, self.on_update)
        with self._lock:
            self._metrics[metric_name, metric_type] = metric
        return metric

    def record(self, name: str, unit: str, dimension_names: list, metric_type: str, value,
               dimension_values: list) -> None:
        """An update a worker process made to its copy of this cache, made here too."""
        kind = MetricTypes(metric_type)
        with self._lock:
            metric = self._metrics.get((name, kind))
            if metric is None or metric.dimension_names != list(dimension_names):
                metric = CachingMetric(name, unit, dimension_names, kind, self.on_update)
                self._metrics[name, kind] = metric
        metric.add_or_update(value, dimension_values)

    def get_metric(self, metric_name: str,
                   metric_type: MetricTypes = MetricTypes.COUNTER) -> CachingMetric:
        with self._lock:
            metric = self._metrics.get((metric_name, metric_type))
        if metric is None:
            raise MetricsCacheError(f"Metric {metric_name} ({metric_type.value}) is not declared: "
                                    "add_metric_to_cache it, or list it in metrics_config.")
        return metric

    def add_metric(self, name, value, unit="", idx=None, dimensions=(),
                   metric_type=MetricTypes.COUNTER) -> None:
        dimensions = self._with_defaults(dimensions)
        with self._lock:
            metric = self._metrics.get((name, metric_type))
            if metric is None or metric.dimension_names != [d.name for d in dimensions]:
                metric = CachingMetric(name, unit, [d.name for d in dimensions], metric_type,
                                       self.on_update)
                self._metrics[name, metric_type] = metric
        metric.add_or_update(value, [d.value for d in dimensions])

    def add_counter(self, name, value, idx=None, dimensions=()):
        self.add_metric(name, value, "count", idx, dimensions, MetricTypes.COUNTER)

    def add_time(self, name, value, idx=None, unit="ms", dimensions=(),
                 metric_type=MetricTypes.GAUGE):
        self.add_metric(name, value, unit, idx, dimensions, metric_type)

    def add_size(self, name, value, idx=None, unit="MB", dimensions=(),
                 metric_type=MetricTypes.GAUGE):
        self.add_metric(name, value, unit, idx, dimensions, metric_type)

    def add_percent(self, name, value, idx=None, dimensions=(), metric_type=MetricTypes.GAUGE):
        self.add_metric(name, value, "percent", idx, dimensions, metric_type)

    def add_error(self, name, value, dimensions=()):
        self.add_metric(name, 1 if value is None else value, "", None, dimensions)

    def _with_defaults(self, dimensions) -> list[Dimension]:
        dimensions = list(dimensions or [])
        names = {d.name for d in dimensions}
        if "ModelName" not in names:
            dimensions.append(Dimension("ModelName", self.model_name))
        if "Level" not in names:
            dimensions.append(Dimension("Level", "Model"))
        return dimensions
