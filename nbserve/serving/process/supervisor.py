"""A worker in a process of its own, restarted when it dies, as TorchServe runs its workers.

A handler that segfaults, calls ``os._exit`` or is killed for memory takes only its process down:
the requests it held are answered 500 at once (naming the model, the worker and the exit code
or signal), the other workers and models go on, and the process is started again after
TorchServe's backoff. A request past its ``response_timeout`` gets 408 and its worker is killed
and restarted, so a forward pass that hangs does not hold the worker forever.

The process is spawned (a fresh interpreter: CUDA is safe and no kernel thread is copied) with
the working folder off its ``sys.path`` (:data:`CHILD`), so a ``nbserve/`` folder where the
server was started is never imported in place of the installed package. Inside it, the same :class:`~nbserve.serving.worker.Worker`
that thread isolation runs serves a local queue, so batching, pipelining, ``Context``,
streaming and handler metrics behave alike in both. The two ends talk over a socket pair: a
request body crosses it once each way, with no shared-memory segment to leave behind. What the
process sends is plain data (:func:`send_message`): an answer that is not is encoded there, as
its HTTP answer will be, and one the server still cannot read fails only its own request. Its stdout and stderr reach this process's stderr, each line prefixed with the model and
worker; the last lines are kept for ``%serve``'s status.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import replace
from datetime import datetime, timezone
from multiprocessing.connection import Connection

from nbserve.errors import ClientClosedRequest, InferenceError, RequestTimeout, WorkerDied
from nbserve.handlers.loader import HandlerLoadError
from nbserve.logs import MODEL_LOG
from nbserve.serving.host import ServerHost
from nbserve.serving.process.messages import Kind, Unreadable, receive_message
from nbserve.serving.queue import Prediction, Request, Stage

BACKOFF = (0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610)
#: Lines of a worker's stderr kept for the status of a worker that died.
STDERR_LINES = 20
#: What the worker's interpreter runs. ``python -m`` would put the working folder first on
#: ``sys.path`` (and ``-P``, which would not, is Python 3.11's); ``-c`` puts it there as the
#: first entry, which the command removes before it imports anything.
CHILD = "import sys; del sys.path[0]; from nbserve.serving.process.child import main; main(int(sys.argv[1]))"


class ProcessWorker:
    """One worker process of a model version: started on :meth:`start`, fed from the
    version's queue, restarted when it dies, until :meth:`stop` or the queue closes."""

    def __init__(self, worker_id: int, version: ServerHost, gpu_id: int | None):
        self.id = worker_id
        self.version = version
        self.gpu_id = gpu_id
        self.label = f"{version.name} w{worker_id}"
        self.status = "UNLOADED"
        self.start_time: datetime | None = None
        self.gpu_memory: int | None = None
        #: The batching policy's latest target and wait in the process (nbserve.serving.batch_policy).
        self.batch_target, self.batch_wait_s = 1, 0.0
        #: How often the process died and was started again, and why it last died.
        self.restarts = 0
        self.last_death: str | None = None
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_LINES)
        self._process: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._send_lock = threading.Lock()
        #: Requests sent to the process and not yet answered, by id; when its worker took
        #: those it has begun (the others a death puts back in line, untouched); and the begun
        #: ones that timed out, whose answer, if it never comes, means the process hangs.
        self._in_flight: dict[str, Request] = {}
        self._started: dict[str, float] = {}
        self._abandoned: set[str] = set()
        self._slots = threading.Condition()
        self._stop = threading.Event()
        #: Set once the feeder has taken its last request: the process is not restarted then.
        self._finishing = False
        self._threads: list[threading.Thread] = []
        self._killed_because: str | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def tuner(self) -> None:
        """Intra-op threads are tuned inside the process; nothing to show here."""
        return None

    def start(self) -> None:
        """Start the process and load the handler in it; a load error is raised here."""
        self._launch()
        feeder = threading.Thread(target=self._feed, name=f"nbserve-{self.label}-feed", daemon=True)
        self._threads.append(feeder)
        feeder.start()

    def stop(self) -> None:
        """Answer the requests in hand, take no more, then end the process."""
        self._stop.set()
        self.version.queue.wake()
        with self._slots:
            self._slots.notify_all()

    def join(self, timeout: float | None = None) -> None:
        for thread in list(self._threads):
            thread.join(timeout)
        self.status = "STOPPED"

    # The process.

    def _launch(self) -> None:
        version = self.version
        self.status = "LOADING"
        self.stderr_tail.clear()
        ours, theirs = socket.socketpair()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        process = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(theirs.fileno())],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env, start_new_session=True)
        theirs.close()
        conn = Connection(ours.detach())
        # Named as TorchServe names them, which model_log.log's lines show.
        worker = f"W-{self.id}-{version.name}_{version.version}"
        relays = [threading.Thread(target=self._relay, args=(stream, tail), daemon=True,
                                   name=f"{worker}-{kind}")
                  for kind, stream, tail in (("stdout", process.stdout, None),
                                             ("stderr", process.stderr, self.stderr_tail))]
        for relay in relays:
            relay.start()
        spec = {"archive": replace(version.archive, in_use=None), "name": version.name,
                "version": version.version, "handler": version.handler, "config": version.config,
                "metrics_config": version.handler_metrics.config_file,
                "requirements": version.requirements, "worker_id": self.id, "gpu_id": self.gpu_id}
        startup_timeout = version.config.startup_timeout
        timed_out = threading.Event()
        watchdog = threading.Timer(startup_timeout, lambda: (timed_out.set(), process.kill()))
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.send(spec)
            # A handler's initialize may add metrics: they come before it is ready.
            while (message := receive_message(conn))[0] == Kind.METRICS:
                for update in message[2][0]:
                    version.handler_metrics.record(*update)
            reply = message[::2]  # (kind, payload): no request id
        except (EOFError, OSError, Unreadable):
            reply = ("died", ())
        finally:
            watchdog.cancel()
        if reply[0] != Kind.READY and timed_out.is_set():
            conn.close()
            process.wait()
            self.status = "UNLOADED"
            # TorchServe's two lines, which its operators (and its test suite) watch for.
            sys.stderr.write(
                f"[{self.label}] Backend worker error\norg.pytorch.serve.wlm."
                "WorkerInitializationException: Backend worker did not respond in given time "
                f"(startupTimeout {startup_timeout:g} s: the worker process was killed)\n")
            raise HandlerLoadError(f"{version.label}: worker process {self.id} did not load "
                                   f"within startupTimeout ({startup_timeout:g} s); it was "
                                   "killed.")
        if reply[0] != Kind.READY:
            conn.close()
            code = process.wait()
            for relay in relays:
                relay.join(1)
            self.status = "UNLOADED"
            if reply[0] == Kind.LOAD_FAILED:
                raise HandlerLoadError(f"{version.label} failed to load in worker process "
                                       f"{self.id}: {reply[1][0]}\n{reply[1][1]}")
            raise HandlerLoadError(f"{version.label}: worker process {self.id} {_death(code)} while "
                                   f"loading.\n" + "".join(self.stderr_tail))
        (self.gpu_memory,) = reply[1]
        self._process, self._conn = process, conn
        self._killed_because = None
        self.start_time = datetime.now(timezone.utc)
        reader = threading.Thread(target=self._read, args=(process, conn, relays), daemon=True,
                                  name=f"nbserve-{self.label}-read")
        self._threads.append(reader)
        reader.start()
        with self._slots:
            self.status = "READY"
            self._slots.notify_all()

    def _relay(self, stream, tail: deque | None) -> None:
        """The process's output, line by line, to our stderr with the worker's prefix."""
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace")
            if tail is not None:
                tail.append(line)
            sys.stderr.write(f"[{self.label}] {line}")
            sys.stderr.flush()
            MODEL_LOG.info(line.rstrip("\n"))
        stream.close()

    def _feed(self) -> None:
        """Send the process requests from the version's queue, up to two batches ahead of it
        (one in the forward pass, one forming), so several worker processes share the load."""
        config = self.version.config
        window = 2 * config.batch_size
        while True:
            with self._slots:
                while (self.status != "READY" or len(self._in_flight) >= window) \
                        and not self._stop.is_set():
                    self._slots.wait()
                room = window - len(self._in_flight)
            if room <= 0:  # stopping, with a full window
                break
            batch = self.version.queue.take_batch(min(room, config.batch_size), self._stop,
                                                  worker=self.id)
            if batch is None:
                break
            for request in batch:
                self._send_request(request)
        self._finish()

    def _send_request(self, request: Request) -> None:
        """Send one request to the process once it is ready; back to the queue if this worker
        stops first. In flight from the moment it is sent, so a death answers it."""
        with self._slots:
            while self.status != "READY" and not self._stop.is_set():
                self._slots.wait()
            if self.status != "READY":
                self.version.queue.requeue(request)
                return
            self._in_flight[request.id] = request
            conn = self._conn
        request.future.add_done_callback(lambda _: self._on_settled(request))
        try:
            with self._send_lock:
                conn.send((Kind.REQUEST, request.id, request.inputs, request.headers))
        except (OSError, ValueError):
            pass  # the process died: its reader answers every request in flight

    def _on_settled(self, request: Request) -> None:
        """A request settled here before its answer came. If it timed out after the process
        began it, the process is killed once it has had it for ``response_timeout`` (as
        TorchServe kills a worker that does not answer in time)."""
        if isinstance(request.future.exception(), ClientClosedRequest):
            # The process has it: told to drop it (a generation stops), its place in the
            # window is freed when it answers.
            with contextlib.suppress(OSError, ValueError, AttributeError), self._send_lock:
                self._conn.send((Kind.CANCEL, request.id))
            return
        with self._slots:
            mine = self._in_flight.pop(request.id, None) is request
            began = self._started.pop(request.id, None)
            self._slots.notify_all()
            if not (mine and began is not None and isinstance(request.future.exception(),
                                                               RequestTimeout)):
                return
            self._abandoned.add(request.id)
        timeout = self.version.config.response_timeout
        timer = threading.Timer(max(0.0, began + timeout - time.monotonic()), self._kill_if_hung,
                                (request.id, self._process, timeout))
        timer.daemon = True
        timer.start()

    def _kill_if_hung(self, request_id: str, process: subprocess.Popen, timeout: float) -> None:
        with self._slots:
            if request_id not in self._abandoned or process is not self._process:
                return
            self._abandoned.discard(request_id)
        if process.poll() is None:
            self._killed_because = (f"was killed: it held a request past its response_timeout "
                                    f"({timeout:g} s)")
            process.kill()

    def _finish(self) -> None:
        """Wait for the requests in hand, then ask the process to end and wait for it."""
        self._finishing = True
        with self._slots:
            while self._in_flight and self._process is not None and self._process.poll() is None:
                self._slots.wait(0.1)
        process, conn = self._process, self._conn
        if process is None:
            return
        try:
            with self._send_lock:
                conn.send((Kind.STOP,))
        except (OSError, ValueError):
            pass
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _read(self, process: subprocess.Popen, conn: Connection,
              relays: list[threading.Thread]) -> None:
        """Answers from the process until it ends; then its death, and a restart."""
        version = self.version
        while True:
            try:
                kind, request_id, payload = receive_message(conn)
            except (EOFError, OSError):
                break
            except Unreadable as unreadable:
                self._unreadable(unreadable)
                continue
            if kind == Kind.ANSWER:
                request = self._take(request_id)
                if request is not None:
                    *answer, stages = payload
                    request.stages += [Stage(*stage) for stage in stages]
                    version.answer(request, Prediction(*answer))
            elif kind == Kind.ERROR:
                request = self._take(request_id)
                if request is not None:
                    error, stages = payload
                    request.stages += [Stage(*stage) for stage in stages]
                    version.fail(request, error)
            elif kind == Kind.STARTED:
                now = time.monotonic()
                with self._slots:
                    self._started.update(dict.fromkeys(payload[0], now))
            elif kind == Kind.PARTS:
                for part_of, part in payload[0]:
                    request = self._in_flight.get(part_of)
                    if request is not None:
                        request.send_part(part)
            elif kind == Kind.BATCH:
                size, self.batch_target, self.batch_wait_s = payload
                version.stats.record_batch(size)
            elif kind == Kind.METRICS:
                for update in payload[0]:
                    version.handler_metrics.record(*update)
        conn.close()
        code = process.wait()
        for relay in relays:  # its last words, before they are quoted
            relay.join(1)
        if self._finishing and self._killed_because is None and code == 0:
            return
        self._died(_death(code))

    def _unreadable(self, message: Unreadable) -> None:
        """A message the server cannot read fails its own request alone (or is logged)."""
        version = self.version
        error = InferenceError(
            f"{version.label}: worker {self.id} sent a {message.kind} the server cannot read "
            f"({message.reason}).", model_name=version.name, version=version.version,
            stage="answer")
        request = self._take(message.request_id) if message.request_id else None
        if request is not None:
            version.fail(request, error)
        else:
            sys.stderr.write(f"[{self.label}] {error}\n")

    def _take(self, request_id: str) -> Request | None:
        with self._slots:
            request = self._in_flight.pop(request_id, None)
            self._started.pop(request_id, None)
            self._abandoned.discard(request_id)
            self._slots.notify_all()
        return request

    def _died(self, how: str) -> None:
        """Answer what the dead process held (what it had not begun goes back in line), then
        start it again after the backoff."""
        version = self.version
        how = self._killed_because or how
        self.last_death = how
        with self._slots:
            self.status = "UNLOADED"
            held = [r for r in self._in_flight.values() if r.id in self._started]
            for request in reversed([r for r in self._in_flight.values() if r.id not in self._started]):
                version.queue.requeue(request)
            self._in_flight, self._started, self._abandoned = {}, {}, set()
            self._slots.notify_all()
        tail = "".join(self.stderr_tail)
        for request in held:
            error = WorkerDied(f"{version.label}: worker {self.id} (pid {self._process.pid}) "
                               f"{how} while answering this request; it is being restarted."
                               + (f"\nLast lines of its stderr:\n{tail}" if tail else ""))
            version.fail(request, error)
        if self._finishing:
            sys.stderr.write(f"[{self.label}] worker process {how} while stopping.\n")
            return
        sys.stderr.write(f"[{self.label}] worker process {how}; restarting it.\n")
        for failures in range(len(BACKOFF) * 1000):
            if self._stop.wait(BACKOFF[min(failures, len(BACKOFF) - 1)]) or self._finishing:
                self.status = "STOPPED"
                with self._slots:
                    self._slots.notify_all()
                return
            try:
                self._launch()
            except HandlerLoadError as error:
                sys.stderr.write(f"[{self.label}] restart failed: {error}\n")
                continue
            self.restarts += 1
            version.stats.record_restart()
            return


def _death(code: int) -> str:
    """How a process ended, from its return code: ``exited with code 1``, ``died of SIGSEGV``."""
    if code < 0:
        try:
            return f"died of {signal.Signals(-code).name}"
        except ValueError:
            return f"died of signal {-code}"
    return f"exited with code {code}"


# The wire from a worker process to the server.
