"""``nbserve serve --start`` and ``--stop``: TorchServe's ``torchserve --start``/``--stop``, so
its scripts run unchanged.

``--start`` runs the same command in the foreground in a process of its own session, its output
in ``logs/nbserve.log`` (``LOG_LOCATION`` moves it), and returns once the APIs listen, as
TorchServe's does. Its pid is kept where TorchServe keeps its own, in the temporary folder
(``TMPDIR``), so two servers with separate ``TMPDIR`` run side by side. ``--stop`` sends it
SIGTERM (it answers what is in flight, then exits) and waits for it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: How long a background server may take to listen, or to stop.
WAIT_S = 180


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
    logs = Path(os.environ.get("LOG_LOCATION") or "logs")
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / "nbserve.log"
    with open(log, "ab") as out:
        start_at = out.tell()
        process = subprocess.Popen([sys.executable, "-m", "nbserve", "serve", *argv],
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    pid_file().write_text(str(process.pid))
    deadline = time.monotonic() + WAIT_S
    said = ""
    while time.monotonic() < deadline:
        with open(log, "rb") as out:
            out.seek(start_at)
            said = out.read().decode(errors="replace")
        if "metrics API at" in said:
            print(said, end="", file=sys.stderr)
            print(f"nbserve is running in the background (pid {process.pid}; its output goes "
                  f"to {log}); nbserve serve --stop stops it.", file=sys.stderr)
            return 0
        if process.poll() is not None:
            break
        time.sleep(0.2)
    print(said, end="", file=sys.stderr)
    print(f"nbserve did not start (see {log}).", file=sys.stderr)
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
