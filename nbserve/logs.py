"""TorchServe's log files, which operators read: ``logs/`` (or ``LOG_LOCATION``) holds

- ``access_log.log``: a line per request (:mod:`nbserve.api.http.access_log`),
- ``model_log.log``: what models say: each worker process's output, line by line, and the
  traceback of each request a handler failed,
- ``ts_log.log``: the server's own messages (``nbserve.*`` loggers): warnings, load failures.

``nbserve serve`` writes them, as TorchServe does (:func:`write_log_files`). Elsewhere (a
kernel, where the cell is the log) :data:`MODEL_LOG` goes nowhere unless a user attaches a
handler, as library loggers do.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

#: What models say, under TorchServe's name for it (which operators grep for).
MODEL_LOG = logging.getLogger("MODEL_LOG")
MODEL_LOG.addHandler(logging.NullHandler())
MODEL_LOG.propagate = False  # only where it is sent

#: TorchServe's log4j layouts: ISO 8601 with a comma before the milliseconds, then the level,
#: thread and logger (its model and server logs) or the message alone (its access log).
_WHEN = "%(asctime)s,%(msecs)03d"
_DATE = "%Y-%m-%dT%H:%M:%S"
LAYOUT = logging.Formatter(
    f"{_WHEN} [%(levelname)-5s] %(threadName)s %(name)s - %(message)s", _DATE)
ACCESS_LAYOUT = logging.Formatter(f"{_WHEN} - %(message)s", _DATE)


def log_location() -> Path:
    """Where the log files go: ``LOG_LOCATION``, as TorchServe reads it, else ``logs``."""
    return Path(os.environ.get("LOG_LOCATION") or "logs")


def write_log_files(config) -> Path:
    """Send model and server logs to their files, and the access log to its own unless
    ``access_log`` names another place; the folder they are in."""
    folder = log_location()
    folder.mkdir(parents=True, exist_ok=True)
    for logger, name in ((MODEL_LOG, "model_log.log"), (logging.getLogger("nbserve"), "ts_log.log")):
        handler = logging.FileHandler(folder / name)
        handler.setFormatter(LAYOUT)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    if config.access_log is None:
        config.values["access_log"] = str(folder / "access_log.log")
    return folder
