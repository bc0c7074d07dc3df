"""OpenTelemetry traces of each request: the route, the queue, the batch and its steps.

Spans are made only where ``opentelemetry-api`` is installed (``pip install 'nbserve[otel]'``),
and go to the process's tracer provider. ``nbserve serve`` (and ``%serve``) set one up from the
standard ``OTEL_*`` settings where none is set (:func:`configure_from_environment`); in a
notebook, a provider you set up yourself receives them instead.

A request's tree::

    POST /predictions/{model_name}      the route (SERVER span; a client's traceparent continues)
      queue                             from arrival until a worker began it
      batch                             the batch it ran in: its size, model, version, worker
        preprocess / inference / postprocess   (or handle, for a handler's own handle)

The worker times its steps as it runs them (:class:`nbserve.serving.queue.Stage`, in a worker process
too); the spans are made from those times once the answer is back, so nothing on the forward
pass's path waits for tracing.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Mapping

from nbserve._version import __version__

try:
    from opentelemetry import propagate, trace
except ImportError:  # the otel extra is not installed: no spans
    trace = None

if TYPE_CHECKING:
    from nbserve.serving.queue import Stage


def _tracer():
    return trace.get_tracer("nbserve", __version__)


def start_server_span(method: str, route: str, path: str, headers: Mapping[str, str],
                      request_id: str):
    """The span of one HTTP request, continuing the client's trace where its headers carry a
    W3C ``traceparent``; None without OpenTelemetry or a tracer provider that records."""
    if trace is None or isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return None  # no provider set: nothing would record
    span = _tracer().start_span(
        f"{method} {route}", context=propagate.extract(headers), kind=trace.SpanKind.SERVER,
        attributes={"http.request.method": method, "http.route": route, "url.path": path,
                    "nbserve.request_id": request_id})
    # Without a tracer provider (the API's default) nothing records: no span work at all.
    return span if span.is_recording() else None


def end_server_span(span, status: int) -> None:
    if span is None:
        return
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(trace.Status(trace.StatusCode.ERROR))
    span.end()


def record_stages(span, received_ns: int, stages: list[Stage], model: str,
                  version: str | None) -> None:
    """Add a request's queue wait, its batch and the batch's steps under ``span``."""
    if span is None or not stages:
        return
    tracer = _tracer()
    parent = trace.set_span_in_context(span)
    begun = min(stage.start_ns for stage in stages)
    tracer.start_span("queue", context=parent, start_time=received_ns).end(end_time=begun)
    last = stages[-1]
    attributes: dict[str, Any] = {"nbserve.model_name": model, "nbserve.batch_size": last.batch_size,
                                  "nbserve.serving.worker": last.worker}
    if version:
        attributes["nbserve.model_version"] = version
    batch = tracer.start_span("batch", context=parent, start_time=begun, attributes=attributes)
    in_batch = trace.set_span_in_context(batch)
    for stage in stages:
        tracer.start_span(stage.name, context=in_batch, start_time=stage.start_ns,
                          attributes={"nbserve.batch_size": stage.batch_size,
                                      "nbserve.serving.worker": stage.worker}).end(end_time=stage.end_ns)
    batch.end(end_time=max(stage.end_ns for stage in stages))


def configure_from_environment() -> bool:
    """Set up the SDK from the standard settings (``OTEL_TRACES_EXPORTER``,
    ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_SERVICE_NAME``...) if they ask for traces and no
    tracer provider is set yet; whether it did. ``OTEL_SDK_DISABLED=true`` turns it off."""
    environ = os.environ
    exporters = environ.get("OTEL_TRACES_EXPORTER")
    if exporters is None and any(key in environ for key in (
            "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        exporters = "otlp"
    if (trace is None or not exporters or environ.get("OTEL_SDK_DISABLED", "").lower() == "true"
            or not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)):
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        return False
    # The exporters by the names the SDK's own auto-configuration uses (its entry points).
    installed = {e.name: e for e in entry_points(group="opentelemetry_traces_exporter")}
    # "otlp" is OTLP over the protocol asked for: http/protobuf (the spec's default) or grpc.
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                           environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"))
    otlp = "otlp_proto_grpc" if protocol == "grpc" else "otlp_proto_http"
    names = [otlp if name.strip() == "otlp" else name.strip() for name in exporters.split(",")
             if name.strip() not in ("", "none")]
    missing = [name for name in names if name not in installed]
    if missing:
        raise RuntimeError(f"OTEL_TRACES_EXPORTER names {', '.join(missing)}, which is not "
                           f"installed (installed: {', '.join(sorted(installed)) or 'none'}); "
                           "pip install 'nbserve[otel]' brings the OTLP exporter.")
    service = {} if "OTEL_SERVICE_NAME" in environ else {"service.name": "nbserve"}
    provider = TracerProvider(resource=Resource.create(service))
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(installed[name].load()()))
    trace.set_tracer_provider(provider)
    return True
