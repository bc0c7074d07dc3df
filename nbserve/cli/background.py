"""``nbserve serve --start`` and ``--stop``: TorchServe's ``torchserve --start``/``--stop``, so
its scripts run unchanged.

``--start`` runs the same command in a process of its own session and returns once the APIs
listen, as TorchServe's does. As TorchServe's server, it keeps the caller's stdout and stderr
(TorchServe's launcher reads them, waiting for "Model server started."), and writes its log
files in ``logs/`` (:mod:`nbserve.logs`). Its pid is kept where TorchServe keeps its own, in
the temporary folder (``TMPDIR``), so two servers with separate ``TMPDIR`` run side by side.
``--stop`` sends it SIGTERM (it answers what is in flight, then exits) and waits for it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nbserve.logs import log_location

#: How long a background server may take to listen, or to stop.
WAIT_S = 180
#: What the server writes to ts_log.log once its APIs listen.
LISTENING = "metrics API at"


def pid_file() -> Path:
    return Path(tempfile.gettempdir()) / ".nbserve.pid"


def running_pid() -> int | None:
    """The background server's pid, if one is running."""
    try:
        pid = int(pid_file().read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return None if _exited(pid) else pid


def _exited(pid: int) -> bool:
    """Whether ``pid`` has exited but is not yet reaped (a zombie: its starter is gone, and a
    container's first process may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] == "Z"


def start(argv: list[str]) -> int:
    """Run ``nbserve serve ARGV`` in the background; 0 once it listens."""
    if running_pid() is not None:
        print("nbserve is already running, please use nbserve serve --stop to stop it.",
              file=sys.stderr)
        return 1
    ts_log = log_location() / "ts_log.log"
    begun = ts_log.stat().st_size if ts_log.exists() else 0
    process = subprocess.Popen([sys.executable, "-m", "nbserve", "serve", *argv],
                               stdin=subprocess.DEVNULL, start_new_session=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    pid_file().write_text(str(process.pid))
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and process.poll() is None:
        if ts_log.exists():
            with open(ts_log, "rb") as log:
                log.seek(begun)
                if LISTENING in log.read().decode(errors="replace"):
                    print(f"nbserve is running in the background (pid {process.pid}; its logs "
                          f"are in {ts_log.parent}); nbserve serve --stop stops it.",
                          file=sys.stderr)
                    return 0
        time.sleep(0.2)
    print(f"nbserve did not start (see {ts_log}).", file=sys.stderr)
    if process.poll() is None:
        process.terminate()
    pid_file().unlink(missing_ok=True)
    return 1


def stop() -> int:
    """Stop the background server, once it has answered what it holds."""
    pid = running_pid()
    if pid is None:
        print("nbserve is not currently running.", file=sys.stderr)
        pid_file().unlink(missing_ok=True)
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + WAIT_S
    while running_pid() is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    if running_pid() is not None:
        print(f"nbserve (pid {pid}) did not stop within {WAIT_S} s.", file=sys.stderr)
        return 1
    pid_file().unlink(missing_ok=True)
    print("nbserve has stopped.", file=sys.stderr)
    return 0
