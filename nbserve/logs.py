"""TorchServe's log files, which operators read: ``logs/`` (or ``LOG_LOCATION``) holds

- ``access_log.log``: a line per request (:mod:`nbserve.api.http.access_log`),
- ``model_log.log``: what models say: each worker process's output, line by line, and the
  traceback of each request a handler failed,
- ``ts_log.log``: the server's own messages (``nbserve.*`` loggers): warnings, load failures;

and, in ``METRICS_LOCATION`` or ``logs``, written with ``metrics_mode=log`` (TorchServe's default):

- ``model_metrics.log``: each update of a metric a handler records (``HandlerTime``,
  ``PredictionTime``, ``context.metrics``), a line each in TorchServe's StatsD-like shape,
- ``ts_metrics.log``: the server's: ``Requests2XX``/``4XX``/``5XX``, ``QueueTime`` and
  ``ts_inference_*`` per request.

``nbserve serve`` writes them, as TorchServe does (:func:`write_log_files`). Elsewhere (a
kernel, where the cell is the log) :data:`MODEL_LOG` goes nowhere unless a user attaches a
handler, as library loggers do, and the metrics loggers are off.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from pathlib import Path

#: What models say, under TorchServe's name for it (which operators grep for).
MODEL_LOG = logging.getLogger("MODEL_LOG")
MODEL_LOG.addHandler(logging.NullHandler())
MODEL_LOG.propagate = False  # only where it is sent

#: TorchServe's metrics loggers: off (below INFO) until :func:`write_log_files` turns them on.
MODEL_METRICS = logging.getLogger("MODEL_METRICS")
TS_METRICS = logging.getLogger("TS_METRICS")
for _metrics in (MODEL_METRICS, TS_METRICS):
    _metrics.addHandler(logging.NullHandler())
    _metrics.propagate = False
    _metrics.setLevel(logging.WARNING)
#: TorchServe's metric units, as its log lines and the metrics API's HELP lines spell them.
UNITS = {"ms": "Milliseconds", "s": "Seconds", "us": "Microseconds", "percent": "Percent",
         "count": "Count", "MB": "Megabytes", "GB": "Gigabytes", "kB": "Kilobytes",
         "B": "Bytes"}
_HOST = socket.gethostname()

#: TorchServe's log4j layouts: ISO 8601 with a comma before the milliseconds, then the level,
#: thread and logger (its model and server logs) or the message alone (its access log).
_WHEN = "%(asctime)s,%(msecs)03d"
_DATE = "%Y-%m-%dT%H:%M:%S"
LAYOUT = logging.Formatter(
    f"{_WHEN} [%(levelname)-5s] %(threadName)s %(name)s - %(message)s", _DATE)
ACCESS_LAYOUT = logging.Formatter(f"{_WHEN} - %(message)s", _DATE)


def metric_line(name: str, unit: str, value: float, dimensions: dict[str, str],
                request_id: str | None = None) -> str:
    """A metric as TorchServe logs it: ``HandlerTime.Milliseconds:0.37|#ModelName:mnist,
    Level:Model|#hostname:h,1733590000,<request id>`` (the server's: ``...,timestamp:T``)."""
    dims = ",".join(f"{k}:{v}" for k, v in dimensions.items())
    unit = UNITS.get(unit, unit or "unit")
    if request_id is None:
        return f"{name}.{unit}:{value}|#{dims}|#hostname:{_HOST},timestamp:{int(time.time())}"
    return f"{name}.{unit}:{value}|#{dims}|#hostname:{_HOST},{int(time.time())},{request_id}"


def model_metric(metric, value: float, dimension_values: list[str]) -> None:
    """A handler metric's update, to ``model_metrics.log`` (a HandlerMetrics ``on_update``)."""
    if MODEL_METRICS.isEnabledFor(logging.INFO):
        MODEL_METRICS.info(metric_line(metric.name, metric.unit, value,
                                       dict(zip(metric.dimension_names, dimension_values)), ""))


#: TorchServe's metrics_mode, as write_log_files set it.
_metrics_mode = "log"


def server_metrics_logged() -> bool:
    """Whether ``ts_metrics.log`` is written (only ``nbserve serve`` writes it)."""
    return TS_METRICS.isEnabledFor(logging.INFO)


def server_metric(name: str, unit: str, value: float, dimensions: dict[str, str],
                  counter: bool = False) -> None:
    """One of the server's metrics, to ``ts_metrics.log``; its ``ts_inference_*`` counters
    only in ``log`` mode (``legacy`` keeps them to the metrics API, as TorchServe does)."""
    if server_metrics_logged() and not (counter and _metrics_mode != "log"):
        TS_METRICS.info(metric_line(name, unit, value, dimensions))


def log_location() -> Path:
    """Where the log files go: ``LOG_LOCATION``, as TorchServe reads it, else ``logs``."""
    return Path(os.environ.get("LOG_LOCATION") or "logs")


def write_log_files(config) -> Path:
    """Send model and server logs to their files, and the access log to its own unless
    ``access_log`` names another place; the folder they are in. A file that cannot be
    written (a read-only LOG_LOCATION) is said on stderr and left out, as TorchServe serves
    on without it."""
    folder = log_location()
    for logger, name in ((MODEL_LOG, "model_log.log"), (logging.getLogger("nbserve"), "ts_log.log")):
        _log_to(logger, folder / name, LAYOUT, logging.INFO)
    if config.access_log is None and _writable(folder):
        config.values["access_log"] = str(folder / "access_log.log")
    # TorchServe's metrics files are in METRICS_LOCATION, else ./logs (not LOG_LOCATION), and
    # exist in every mode; metrics_mode=log and legacy write lines in them.
    global _metrics_mode
    _metrics_mode = config.metrics_mode
    metrics_folder = Path(os.environ.get("METRICS_LOCATION") or "logs")
    level = logging.INFO if config.metrics_mode in ("log", "legacy") else logging.WARNING
    for logger, name in ((MODEL_METRICS, "model_metrics.log"), (TS_METRICS, "ts_metrics.log")):
        _log_to(logger, metrics_folder / name, ACCESS_LAYOUT, level)
    return folder


def _log_to(logger: logging.Logger, path: Path, layout: logging.Formatter, level: int) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
    except OSError as error:
        sys.stderr.write(f"nbserve: warning: {path} cannot be written ({error.strerror}); "
                         "serving without it.\n")
        return
    handler.setFormatter(layout)
    logger.addHandler(handler)
    logger.setLevel(level)


def _writable(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK)
