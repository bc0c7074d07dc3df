"""The ``nbserve`` command line: one argparse parser per verb, shared with the notebook magics.

Each ``add_*_arguments`` function defines a verb's flags once; the CLI and ``%archive`` /
``%serve`` / ``%predict`` both build their parsers from it, so the two never drift apart.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import logging
import re
import sys
import time
from pathlib import Path

from nbserve import __version__
from nbserve.archive import ARCHIVE_FORMATS, RUNTIMES, archive
from nbserve.errors import BadRequest, NBServeError

#: Below this many bytes an archive is written too fast for a progress bar to help.
PROGRESS_THRESHOLD = 64 * 2**20


def add_archive_arguments(parser: argparse.ArgumentParser) -> None:
    """``torch-model-archiver`` 0.12's flags, with its short forms and defaults."""
    parser.add_argument("--model-name", required=True,
                        help="Model name; the archive is saved as MODEL_NAME.mar.")
    parser.add_argument("--serialized-file",
                        help="A .pt/.pth state dict (eager mode), a TorchScript or .pt2 file.")
    parser.add_argument("--model-file",
                        help="Python file with the model's one nn.Module class (eager mode).")
    parser.add_argument("--handler", required=True,
                        help="A default handler (image_classifier, image_segmenter, "
                             "object_detector, text_classifier), a .py file, or file.py:function.")
    parser.add_argument("--extra-files",
                        help="Comma-separated files or folders to include (wildcards allowed).")
    parser.add_argument("--runtime", default="python", choices=RUNTIMES,
                        help='The runtime of the inference code (default "python").')
    parser.add_argument("--export-path", default=".",
                        help="Folder to save the archive in (default: the current folder).")
    parser.add_argument("--archive-format", default="default", choices=list(ARCHIVE_FORMATS),
                        help='"default": MODEL_NAME.mar; "zip-store": .mar without compression; '
                             '"tgz": MODEL_NAME.tar.gz; "no-archive": a folder MODEL_NAME/.')
    parser.add_argument("-f", "--force", action="store_true",
                        help="Overwrite an existing archive of the same name.")
    parser.add_argument("-v", "--version", required=True, help="Model's version.")
    parser.add_argument("-r", "--requirements-file",
                        help="requirements.txt with the model's Python dependencies.")
    parser.add_argument("-c", "--config-file",
                        help="model-config.yaml (batch_size, max_batch_delay, workers, ...).")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="Show no progress bar.")


def run_archive(args: argparse.Namespace, progress=None) -> str:
    """Make the archive that parsed ``archive`` arguments describe; returns its path."""
    # One keyword a flag, spelled out: judged boilerplate (the flags are archive()'s names).
    path = archive(
        model_name=args.model_name,
        version=args.version,
        handler=args.handler,
        serialized_file=args.serialized_file,
        model_file=args.model_file,
        extra_files=args.extra_files,
        requirements_file=args.requirements_file,
        config_file=args.config_file,
        runtime=args.runtime,
        export_path=args.export_path,
        archive_format=args.archive_format,
        force=args.force,
        progress=progress,
    )
    return str(path)


class TerminalProgress:
    """A one-line progress bar on stderr for archives big enough to need one."""

    def __init__(self, label: str, stream=sys.stderr, width: int = 30):
        self.label, self.stream, self.width = label, stream, width
        self.started = time.monotonic()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if total < PROGRESS_THRESHOLD:
            return
        filled = self.width * done // max(total, 1)
        rate = done / max(time.monotonic() - self.started, 1e-6) / 2**20
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
            f"{done / 2**20:,.0f}/{total / 2**20:,.0f} MiB {rate:,.0f} MiB/s"
        )
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """TorchServe's start flags that mean something here, and the three addresses."""
    parser.add_argument("--model-store", help="Folder of model archives (model_store).")
    parser.add_argument("--models", nargs="*", default=[],
                        help="Models to load: NAME=FILE.mar, FILE.mar, or all (every archive "
                             "in the model store).")
    parser.add_argument("--ts-config", help="A TorchServe config.properties file.")
    parser.add_argument("--inference-address", help="Default http://127.0.0.1:8080.")
    parser.add_argument("--management-address", help="Default http://127.0.0.1:8081.")
    parser.add_argument("--metrics-address", help="Default http://127.0.0.1:8082.")
    parser.add_argument("--enable-model-api", action="store_true",
                        help="Allow registering and unregistering models over HTTP.")
    parser.add_argument("--disable-token-auth", action="store_true",
                        help="Answer without TorchServe's keys (anyone who reaches the "
                             "addresses may call them).")
    parser.add_argument("--grpc", action="store_true",
                        help="Serve TorchServe's gRPC APIs too (inference 127.0.0.1:7070, "
                             "management :7071; pip install 'nbserve[grpc]').")
    parser.add_argument("--isolation", choices=("process", "thread"),
                        help="Where a model's workers run: process (one each, restarted when it "
                             "dies; nbserve serve's default, as in TorchServe) or thread (in "
                             "this process; %%serve's default, so tracebacks land in the cell).")
    parser.add_argument("--preprocess-threads", type=int,
                        help="Threads preprocessing each worker's requests (default: the CPUs "
                             "this process may use, shared among a model's workers).")
    parser.add_argument("--access-log", metavar="FILE",
                        help="Write a line per request, as TorchServe's access log does, to "
                             "FILE, or to stderr with - (access_log).")
    parser.add_argument("--on", choices=("local", "ray"), default="local",
                        help="Where the models run: local (this process: the kernel, or nbserve "
                             "serve) or ray (replicas on Ray Serve; pip install 'nbserve[ray]').")
    on_ray = parser.add_argument_group(
        "on Ray Serve (--on ray)",
        "Ray Serve's HTTP proxy answers the inference and management paths, at "
        "--inference-address if nbserve starts Serve (default http://127.0.0.1:8000).")
    on_ray.add_argument("--ray-address",
                        help="The Ray cluster (ray://head:10001, auto, host:port); default "
                             "RAY_ADDRESS, or a new local cluster.")
    on_ray.add_argument("--replicas", type=int, default=1,
                        help="Replicas of each model (Ray's num_replicas; default 1).")
    on_ray.add_argument("--min-replicas", type=int,
                        help="Autoscale each model from this many replicas.")
    on_ray.add_argument("--max-replicas", type=int,
                        help="Autoscale each model up to this many replicas.")
    on_ray.add_argument("--num-cpus", type=float, default=1, help="CPUs per replica (default 1).")
    on_ray.add_argument("--num-gpus", type=float, default=0, help="GPUs per replica (default 0).")
    # TorchServe flags with nothing to do here: no snapshots.
    for ignored in ("--ncs", "--no-config-snapshots"):
        parser.add_argument(ignored, action="store_true", help=argparse.SUPPRESS)


def add_background_arguments(parser: argparse.ArgumentParser) -> None:
    """``nbserve serve``'s TorchServe flags for a server in the background (see
    nbserve.background); a kernel's server is the kernel's."""
    parser.add_argument("--start", action="store_true",
                        help="Serve in the background, as torchserve --start does (logs in "
                             "logs/); return once the APIs listen.")
    parser.add_argument("--stop", action="store_true",
                        help="Stop the server --start started, as torchserve --stop does.")
    parser.add_argument("--foreground", action="store_true",
                        help="With --start: stay in the foreground (the default without it).")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """What ``%serve`` can say of the one model it serves (TorchServe's register parameters)."""
    parser.add_argument("source", nargs="?",
                        help="An archive (.mar, .tar.gz or folder), or a variable holding an "
                             "nn.Module, a TorchScript module or a handler, served live.")
    parser.add_argument("--model-name", help="The name to serve it under (default: the archive's).")
    parser.add_argument("--version", help="The version to serve it as (default: the archive's, or 1.0).")
    parser.add_argument("--handler",
                        help="A default handler, a .py file, or a variable holding a handler "
                             "class, instance or function.")
    parser.add_argument("--extra-files", help="Comma-separated files a live model's handler reads "
                                              "(index_to_name.json, say).")
    parser.add_argument("--batch-size", type=int, help="Largest batch (default: this machine's).")
    parser.add_argument("--max-batch-delay", type=float,
                        help="Milliseconds to wait for a batch to fill.")
    parser.add_argument("--workers", type=int, help="Workers to start (TorchServe's initial_workers).")
    parser.add_argument("--response-timeout", type=float, help="Seconds before a request gets 408.")
    parser.add_argument("--stop", nargs="?", const="", metavar="NAME",
                        help="Stop serving NAME, or everything (freeing the ports) without NAME.")


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """``%predict``'s flags: a model this process serves, and what to send it."""
    parser.add_argument("model_name", help="A model this kernel serves.")
    parser.add_argument("input", nargs="?",
                        help="A file, a URL, or a variable (bytes, a PIL image, a tensor, text). "
                             "Without it, an upload widget.")
    parser.add_argument("--version", help="The model's version (default: its default version).")


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """TorchServe benchmark-ab's parameters, with its meanings (defaults: see nbserve.bench)."""
    parser.add_argument("--url", "-u", help="The model archive to serve and measure (a .mar "
                                             "path or URL); leave out with --address to measure "
                                             "a model already served.")
    parser.add_argument("--input", "-i", help="The file sent as each request's body.")
    parser.add_argument("--content-type", "-ic", help="Its content type (default application/jpg).")
    parser.add_argument("--concurrency", "-c", type=int, help="Clients at once (default 10).")
    parser.add_argument("--requests", "-r", type=int, help="Requests in all (default 100).")
    parser.add_argument("--workers", "-w", type=int, help="Workers to serve --url with (default 1).")
    parser.add_argument("--batch-size", "-bs", type=int, help="Its batch size (default 1).")
    parser.add_argument("--batch-delay", "-bd", type=float,
                        help="Its max batch delay, ms (default 200).")
    parser.add_argument("--inference-model-url", help="The path measured (default "
                        "predictions/benchmark; explanations/..., v1/models/...:predict, "
                        "v2/models/.../infer).")
    parser.add_argument("--config", help="A JSON file with the same keys (benchmark-ab's --config).")
    parser.add_argument("--report-location", help="Where benchmark/ab_report.csv and the latency "
                                                  "plot go (default the temp folder).")
    parser.add_argument("--address", help="A server already running (nbserve or TorchServe): its "
                                          "inference address, e.g. http://127.0.0.1:8080.")
    parser.add_argument("--management-address",
                        help="With --address and --url: where to register --url as the model.")
    parser.add_argument("--key", help="The inference key the --address server asks for.")
    parser.add_argument("--management-key", help="The management key, to register --url there.")


def add_bench_magic_arguments(parser: argparse.ArgumentParser) -> None:
    """``%bench``'s flags: a model this kernel serves, what to send, and how hard."""
    parser.add_argument("model_name", help="A model this kernel serves.")
    parser.add_argument("input", help="A file, a URL, or a variable: each request's body.")
    parser.add_argument("--concurrency", "-c", type=int, default=10, help="Clients at once.")
    parser.add_argument("--requests", "-r", type=int, default=100, help="Requests in all.")
    parser.add_argument("--content-type", default="application/jpg")
    parser.add_argument("--sweep", action="store_true",
                        help="Try batch sizes and worker counts (and --concurrencies) within "
                             "--budget seconds, and recommend one for --p99-ms.")
    parser.add_argument("--batch-sizes", default="1,2,4,8", help="Batch sizes a sweep tries.")
    parser.add_argument("--workers", default="1,2", help="Worker counts a sweep tries.")
    parser.add_argument("--concurrencies", help="Concurrencies a sweep tries (default --concurrency).")
    parser.add_argument("--budget", type=float, default=60, help="A sweep's seconds in all.")
    parser.add_argument("--p99-ms", type=float, help="The p99 latency a sweep's choice must meet.")


def server_config(args: argparse.Namespace):
    """The ServerConfig that parsed ``serve`` arguments describe: config.properties, then flags,
    then ``TS_*`` environment variables where config.properties enables them (TorchServe's
    order)."""
    import os

    from nbserve.config import ServerConfig

    config = ServerConfig.from_properties(args.ts_config) if args.ts_config else ServerConfig()
    for key in ("model_store", "inference_address", "management_address", "metrics_address",
                "access_log"):
        if getattr(args, key, None):
            config.values[key] = getattr(args, key)
    if args.enable_model_api:
        config.values["enable_model_api"] = True
    if args.disable_token_auth:
        config.values["disable_token_authorization"] = True
    if args.isolation:
        config.values["isolation"] = args.isolation
    if args.grpc:
        config.values["enable_grpc"] = True
    if args.preprocess_threads:
        config.values["preprocess_threads"] = args.preprocess_threads
    config.apply_environment(os.environ)
    return config


def ray_placement(args: argparse.Namespace) -> dict:
    """What parsed ``serve`` arguments ask of Ray for each model's replicas."""
    return {"replicas": args.replicas, "min_replicas": args.min_replicas,
            "max_replicas": args.max_replicas, "num_cpus": args.num_cpus,
            "num_gpus": args.num_gpus}


class _Parser(argparse.ArgumentParser):
    """argparse's parser, for the verbs too, whose errors come with the usage of the verb they
    are about and name the flag or verb most likely meant."""

    def parse_known_args(self, args=None, namespace=None):
        # A verb's parser refuses what it does not know itself; argparse would hand it up to
        # the top-level parser, which prints its own usage instead of the verb's.
        parsed, unknown = super().parse_known_args(args, namespace)
        if unknown:
            meant = [self._closest(arg.split("=")[0], [option for action in self._actions
                                                      for option in action.option_strings])
                     for arg in unknown if arg.startswith("-")]
            self.error(f"unrecognized arguments: {' '.join(unknown)}"
                       + "".join(f" (did you mean {m}?)" for m in meant if m))
        return parsed, unknown

    def error(self, message):
        choice = re.search(r"invalid choice: '([^']*)'", message)
        if choice:
            verbs = [verb for action in self._actions if isinstance(action.choices, dict)
                     for verb in action.choices]
            meant = self._closest(choice[1], verbs)
            message += f" (did you mean {meant}?)" if meant else ""
        super().error(message)

    @staticmethod
    def _closest(word: str, known: list[str]) -> str | None:
        return next(iter(difflib.get_close_matches(word, known, n=1)), None)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nbserve",
        description="TorchServe-compatible model serving, in the notebook and on the command line.",
    )
    parser.add_argument("--version", action="version", version=f"nbserve {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    archive_parser = verbs.add_parser(
        "archive", help="Make a model archive (.mar), as torch-model-archiver does.",
        description="Make a model archive (.mar) that nbserve and TorchServe both serve.",
    )
    add_archive_arguments(archive_parser)
    archive_parser.set_defaults(run=_archive_command)

    serve_parser = verbs.add_parser(
        "serve", help="Serve models over TorchServe's REST API, in the foreground.",
        description="Serve models over TorchServe's inference, management and metrics APIs "
                    "until Ctrl-C or SIGTERM, which answer what is in flight first.",
    )
    add_serve_arguments(serve_parser)
    add_background_arguments(serve_parser)
    serve_parser.set_defaults(run=_serve_command)
    bench_parser = verbs.add_parser(
        "bench", help="Measure a served model as TorchServe's benchmark-ab does.",
        description="Serve --url (or call --address) with closed-loop clients from a separate "
                    "process, and write benchmark-ab's ab_report.csv and a latency plot.")
    add_bench_arguments(bench_parser)
    bench_parser.set_defaults(run=_bench_command)
    return parser


def _serve_command(args: argparse.Namespace) -> int:
    if args.stop or (args.start and not args.foreground):
        from nbserve import background

        if args.stop:
            return background.stop()
        return background.start([arg for arg in args.argv[1:] if arg != "--start"])
    config = server_config(args)
    for warning in config.warnings:
        print(f"nbserve serve: warning: {warning}", file=sys.stderr)
    if args.on == "ray":
        return _serve_on_ray(args, config)

    from nbserve.http.access import serving_notices
    from nbserve.logs import write_log_files
    from nbserve.startup import start_serving

    write_log_files(config)  # this process's logs, in logs/ as TorchServe writes them
    stop = _stop_on_signals()
    engine, server = start_serving(config, args.models)
    for failure in engine.failures.values():
        _say(f"nbserve: {failure.name} ({failure.source}) failed to load; serving the others.\n"
             f"{failure.traceback}", logging.ERROR)
    if engine.failures and not engine.models():
        _say("nbserve serve: error: no model could be loaded", logging.ERROR)
        server.stop()
        engine.close()
        return 1
    for notice in serving_notices(config, server.tokens):
        _say(f"nbserve: {notice}")
    for api, url in (server.grpc.urls if server.grpc else {}).items():
        _say(f"nbserve: gRPC {api} API at {url}")
    for api, url in server.urls.items():
        _say(f"nbserve: {api} API at {url}")
    print("Model server started.", flush=True)  # TorchServe's line, which its launcher awaits
    stop.wait()
    _say("nbserve: stopping; answering requests in flight")
    server.stop()
    engine.close()
    return 0


def _say(message: str, level: int = logging.INFO) -> None:
    """What nbserve serve tells its operator: on stderr, and in ts_log.log (nbserve.logs)."""
    print(message, file=sys.stderr, flush=True)
    logging.getLogger("nbserve.serve").log(level, message)


def _bench_command(args: argparse.Namespace) -> int:
    from nbserve.bench import BenchSettings, measure

    flags = {key: getattr(args, key) for key in (
        "url", "input", "content_type", "concurrency", "requests", "workers", "batch_size",
        "batch_delay", "inference_model_url", "report_location")}
    settings = (BenchSettings.from_config(args.config, **flags) if args.config
                else BenchSettings(**{k: v for k, v in flags.items() if v is not None}))
    if not settings.input:
        raise BadRequest("nbserve bench needs --input (the file each request sends).")
    if args.address:
        with _registered(args, settings):
            result = measure(settings, f"{args.address.rstrip('/')}/{settings.inference_model_url}",
                             key=args.key, on_progress=TerminalCount("requests"))
    else:
        if not settings.url:
            raise BadRequest("nbserve bench needs --url (an archive to serve) or --address.")
        with _serving(settings) as (server, key):
            result = measure(settings, f"{server.urls['inference']}/{settings.inference_model_url}",
                             key=key, metrics_url=server.urls["metrics"],
                             on_progress=TerminalCount("requests"))
    result.write_report()
    print(result)
    return 0 if result.failed < result.answered else 1


@contextlib.contextmanager
def _serving(settings):
    """``settings.url`` served under the name its inference_model_url calls, on free loopback
    ports, with worker processes, as benchmark-ab registers it on TorchServe."""
    import tempfile

    from nbserve.config import ServerConfig
    from nbserve.http import Server
    from nbserve.startup import engine_for

    config = ServerConfig()
    config.values.update({f"{api}_address": "http://127.0.0.1:0"
                          for api in ("inference", "management", "metrics")})
    engine = engine_for(config, isolation="process")
    key_file = Path(tempfile.mkdtemp(prefix="nbserve-bench-")) / "key_file.json"
    try:
        engine.register(settings.url, model_name=_model_of(settings.inference_model_url),
                        batch_size=settings.batch_size, max_batch_delay=settings.batch_delay,
                        initial_workers=settings.workers)
        server = Server(engine, config, key_file=key_file).start()
        try:
            yield server, server.tokens.keys["inference"] if server.tokens else None
        finally:
            server.stop()
    finally:
        engine.close()


@contextlib.contextmanager
def _registered(args, settings):
    """With --management-address and --url, the model registered there for the run (as
    benchmark-ab registers ``benchmark``), and unregistered after."""
    import urllib.parse
    import urllib.request

    if not (settings.url and args.management_address):
        yield
        return
    name = _model_of(settings.inference_model_url)
    base = args.management_address.rstrip("/")
    headers = {"Authorization": f"Bearer {args.management_key}"} if args.management_key else {}
    query = urllib.parse.urlencode({"url": settings.url, "model_name": name,
                                    "batch_size": settings.batch_size,
                                    "max_batch_delay": int(settings.batch_delay),
                                    "initial_workers": settings.workers, "synchronous": "true"})
    urllib.request.urlopen(urllib.request.Request(f"{base}/models?{query}", method="POST",
                                                  headers=headers), timeout=600).read()
    try:
        yield
    finally:
        urllib.request.urlopen(urllib.request.Request(f"{base}/models/{name}", method="DELETE",
                                                      headers=headers), timeout=600).read()


def _model_of(inference_model_url: str) -> str:
    """The model an inference path calls: predictions/NAME, v1/models/NAME:predict, ..."""
    parts = inference_model_url.strip("/").split("/")
    name = parts[2] if parts[0] in ("v1", "v2") and len(parts) > 2 else parts[1]
    return name.split(":")[0]


class TerminalCount:
    """Requests answered so far, on one line of stderr."""

    def __init__(self, label: str, stream=sys.stderr):
        self.label, self.stream = label, stream

    def __call__(self, done: int, total: int) -> None:
        self.stream.write(f"\r{done}/{total} {self.label}")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def _serve_on_ray(args: argparse.Namespace, config) -> int:
    from nbserve import ray_serve
    from nbserve.display import served_line
    from nbserve.http.access import key_notice

    serving = ray_serve.connect(args.ray_address, http_address=args.inference_address,
                                config=config)
    stop = _stop_on_signals()  # after connecting: ray.init sets a SIGTERM handler of its own
    try:
        if serving.tokens is not None:
            print(f"nbserve: {key_notice(serving.tokens)}", file=sys.stderr, flush=True)
        for model in serving.deploy_models(config, args.models, **ray_placement(args)):
            print("nbserve: " + served_line(model.name, model.version,
                                            f"on Ray ({model.describe_placement()})", serving.url),
                  file=sys.stderr, flush=True)
        print(f"nbserve: inference and management APIs at {serving.url}", file=sys.stderr,
              flush=True)
        stop.wait()
        print("nbserve: stopping; deleting the models from Ray", file=sys.stderr, flush=True)
    finally:
        serving.shutdown()
    return 0


def _stop_on_signals():
    """An event set by Ctrl-C or SIGTERM."""
    import signal
    import threading

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def _archive_command(args: argparse.Namespace) -> int:
    progress = None
    if not args.quiet and sys.stderr.isatty():
        progress = TerminalProgress(f"Archiving {args.model_name}")
    try:
        path = run_archive(args, progress)
    finally:
        if progress is not None:
            progress.close()
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return args.run(args)
    except (NBServeError, OSError) as e:  # an address in use, a file missing: said, not a traceback
        print(f"nbserve {args.verb}: error: {getattr(e, 'strerror', None) or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
