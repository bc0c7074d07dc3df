"""The ``nbserve`` command line: ``archive``, ``archive-workflow``, ``serve`` (TorchServe's ``torchserve``), ``predict``
and ``bench``, one argparse parser per verb, whose flags (:mod:`.arguments`) the notebook magics
share."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import logging
import re
import sys
from pathlib import Path

from nbserve._version import __version__
from nbserve.cli.arguments import (
    add_archive_arguments,
    add_background_arguments,
    add_bench_arguments,
    add_serve_arguments,
    add_snapshot_arguments,
    add_workflow_archive_arguments,
    ray_placement,
    run_archive,
    server_config,
)
from nbserve.errors import BadRequest, NBServeError
from nbserve.progress import Progress
from nbserve.store.workflow_archiver import archive_workflow


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

    workflow_parser = verbs.add_parser(
        "archive-workflow", help="Make a workflow archive (.war), as torch-workflow-archiver "
                                 "does.",
        description="Make a workflow archive (.war) that nbserve and TorchServe both serve.")
    add_workflow_archive_arguments(workflow_parser)
    workflow_parser.set_defaults(run=_archive_workflow_command)

    serve_parser = verbs.add_parser(
        "serve", help="Serve models over TorchServe's REST API, in the foreground.",
        description="Serve models over TorchServe's inference, management and metrics APIs "
                    "until Ctrl-C or SIGTERM, which answer what is in flight first.",
    )
    add_serve_arguments(serve_parser)
    add_background_arguments(serve_parser)
    add_snapshot_arguments(serve_parser)
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
        from nbserve.cli import background

        if args.stop:
            return background.stop()
        return background.start([arg for arg in args.argv[1:] if arg != "--start"])
    from nbserve.api.snapshot import Snapshots, latest_snapshot

    restored = None
    if args.on == "local" and not args.ts_config and not args.no_config_snapshots:
        args.ts_config = restored = latest_snapshot()  # TorchServe restarts from its newest
    config = server_config(args)
    for warning in config.warnings:
        print(f"nbserve serve: warning: {warning}", file=sys.stderr)
    if args.on == "ray":
        return _serve_on_ray(args, config)

    from nbserve.api.access import serving_notices
    from nbserve.api.startup import grpc_installed, start_serving
    from nbserve.logs import write_log_files

    write_log_files(config)  # this process's logs, in logs/ as TorchServe writes them
    if restored:
        _say(f"nbserve serve: serving what {restored} names, as TorchServe restarts from its "
             "newest snapshot (--ts-config names another file; --ncs neither reads nor "
             "writes snapshots)")
    stop = _stop_on_signals()
    engine, server = start_serving(config, args.models)
    for failure in engine.failures.values():
        _say(f"nbserve: {failure.name} ({failure.source}) failed to load; serving the others.\n"
             f"{failure.traceback}", logging.ERROR)
    if config.enable_grpc is None and grpc_installed():  # TorchServe serves gRPC by default
        try:
            server.start_grpc()
        except OSError as error:  # asked for, a taken port stops the server; unasked, it warns
            _say(f"nbserve serve: warning: gRPC is not served: {error.strerror}", logging.WARNING)
    for notice in serving_notices(config, server.tokens):
        _say(f"nbserve: {notice}")
    for api, url in (server.grpc.urls if server.grpc else {}).items():
        _say(f"nbserve: gRPC {api} API at {url}")
    for api, url in server.urls.items():
        _say(f"nbserve: {api} API at {url}")
    system = None
    if not config.disable_system_metrics:
        from nbserve.api.system_metrics import SystemMetrics

        system = SystemMetrics(config.metric_time_interval).start()
    snapshots = None if args.no_config_snapshots else Snapshots(config, engine)
    if snapshots:
        snapshots.write("startup")
        engine.on_change.append(lambda: snapshots.write("snapshot"))
    print("Model server started.", flush=True)  # TorchServe's line, which its launcher awaits
    stop.wait()
    _say("nbserve: stopping; answering requests in flight")
    if snapshots:
        engine.on_change.clear()
        snapshots.write("shutdown")
    if system:
        system.stop()
    server.stop()
    engine.close()
    return 0


def _say(message: str, level: int = logging.INFO) -> None:
    """What nbserve serve tells its operator: on stderr, and in ts_log.log (nbserve.logs)."""
    print(message, file=sys.stderr, flush=True)
    logging.getLogger("nbserve.serve").log(level, message)


def _bench_command(args: argparse.Namespace) -> int:
    from nbserve.benchmark.load import BenchSettings, measure

    flags = {key: getattr(args, key) for key in (
        "url", "input", "content_type", "concurrency", "requests", "workers", "batch_size",
        "batch_delay", "inference_model_url", "report_location")}
    settings = (BenchSettings.from_config(args.config, **flags) if args.config
                else BenchSettings(**{k: v for k, v in flags.items() if v is not None}))
    if args.llm:
        return _bench_generation(args, settings)
    if not settings.input:
        raise BadRequest("nbserve bench needs --input (the file each request sends).")
    if args.address:
        with _registered(args, settings):
            result = measure(settings, f"{args.address.rstrip('/')}/{settings.inference_model_url}",
                             key=args.key, on_progress=Progress.requests("requests"))
    else:
        if not settings.url:
            raise BadRequest("nbserve bench needs --url (an archive to serve) or --address.")
        with _serving(settings) as (server, key):
            result = measure(settings, f"{server.urls['inference']}/{settings.inference_model_url}",
                             key=key, metrics_url=server.urls["metrics"],
                             on_progress=Progress.requests("requests"))
    result.write_report()
    print(result)
    return 0 if result.failed < result.answered else 1


def _bench_generation(args: argparse.Namespace, settings) -> int:
    """``--llm``: the model ``--inference-model-url`` names, measured over OpenAI's API at
    each of ``--streams``; ``--input``, if given, is a text file of prompts, one a line."""
    from nbserve.benchmark.generation import measure

    prompts = [line for line in Path(settings.input).read_text().splitlines()
               if line.strip()] if settings.input else []
    model = _model_of(settings.inference_model_url)
    streams = [int(n) for n in args.streams.split(",")]
    progress = Progress(f"{model} at {args.streams} streams", unit="levels")

    def run(address: str, key: str | None):
        return measure(f"{address.rstrip('/')}/v1", model, streams=streams,
                       seconds=args.seconds, max_tokens=args.max_tokens,
                       prompts=prompts or None, key=key, on_progress=progress)

    if args.address:
        with _registered(args, settings):
            result = run(args.address, args.key)
    elif settings.url:
        with _serving(settings) as (server, key):
            result = run(server.urls["inference"], key)
    else:
        raise BadRequest("nbserve bench --llm needs --url (a model to serve) or --address.")
    progress.close()
    print(result)
    return 0 if all(r.failed < sum(r.statuses.values()) for r in result.results) else 1


@contextlib.contextmanager
def _serving(settings):
    """``settings.url`` served under the name its inference_model_url calls, on free loopback
    ports, with worker processes, as benchmark-ab registers it on TorchServe."""
    import tempfile

    from nbserve.api.http import Server
    from nbserve.api.startup import engine_for
    from nbserve.config import ServerConfig

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


def _serve_on_ray(args: argparse.Namespace, config) -> int:
    from nbserve import ray_serve
    from nbserve.api.access import key_notice
    from nbserve.api.routes import served_line

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
        progress = Progress.archive(f"Archiving {args.model_name}")
    try:
        path = run_archive(args, progress)
    finally:
        if progress is not None:
            progress.close()
    print(path)
    return 0


def _archive_workflow_command(args: argparse.Namespace) -> int:
    print(archive_workflow(args.workflow_name, args.spec_file, args.handler,
                           extra_files=args.extra_files, export_path=args.export_path,
                           force=args.force))
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
