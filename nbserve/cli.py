"""The ``nbserve`` command line: one argparse parser per verb, shared with the notebook magics.

Each ``add_*_arguments`` function defines a verb's flags once; the CLI and ``%archive`` /
``%serve`` / ``%predict`` both build their parsers from it, so the two never drift apart.
"""

from __future__ import annotations

import argparse
import sys
import time

from nbserve import __version__
from nbserve.archive import ARCHIVE_FORMATS, RUNTIMES, archive
from nbserve.errors import NBServeError

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
    parser.add_argument("--isolation", choices=("process", "thread"),
                        help="Where a model's workers run: process (one each, restarted when it "
                             "dies; nbserve serve's default, as in TorchServe) or thread (in "
                             "this process; %%serve's default, so tracebacks land in the cell).")
    parser.add_argument("--preprocess-threads", type=int,
                        help="Threads preprocessing each worker's requests (default: the CPUs "
                             "this process may use, shared among a model's workers).")
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
    # TorchServe flags with nothing to do here: no snapshots, always in the foreground.
    for ignored in ("--ncs", "--no-config-snapshots", "--foreground", "--start"):
        parser.add_argument(ignored, action="store_true", help=argparse.SUPPRESS)


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


def server_config(args: argparse.Namespace):
    """The ServerConfig that parsed ``serve`` arguments describe: config.properties, then flags,
    then ``TS_*`` environment variables where config.properties enables them (TorchServe's
    order)."""
    import os

    from nbserve.config import ServerConfig

    config = ServerConfig.from_properties(args.ts_config) if args.ts_config else ServerConfig()
    for key in ("model_store", "inference_address", "management_address", "metrics_address"):
        if getattr(args, key, None):
            config.values[key] = getattr(args, key)
    if args.enable_model_api:
        config.values["enable_model_api"] = True
    if args.disable_token_auth:
        config.values["disable_token_authorization"] = True
    if args.isolation:
        config.values["isolation"] = args.isolation
    if args.preprocess_threads:
        config.values["preprocess_threads"] = args.preprocess_threads
    config.apply_environment(os.environ)
    return config


def ray_placement(args: argparse.Namespace) -> dict:
    """What parsed ``serve`` arguments ask of Ray for each model's replicas."""
    return {"replicas": args.replicas, "min_replicas": args.min_replicas,
            "max_replicas": args.max_replicas, "num_cpus": args.num_cpus,
            "num_gpus": args.num_gpus}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    serve_parser.set_defaults(run=_serve_command)
    return parser


def _serve_command(args: argparse.Namespace) -> int:
    config = server_config(args)
    for warning in config.warnings:
        print(f"nbserve serve: warning: {warning}", file=sys.stderr)
    if args.on == "ray":
        return _serve_on_ray(args, config)

    from nbserve.http.access import serving_notices
    from nbserve.startup import start_serving

    stop = _stop_on_signals()
    engine, server = start_serving(config, args.models)
    for failure in engine.failures.values():
        print(f"nbserve: {failure.name} ({failure.source}) failed to load; serving the others.\n"
              f"{failure.traceback}", file=sys.stderr, flush=True)
    if engine.failures and not engine.models():
        print("nbserve serve: error: no model could be loaded", file=sys.stderr)
        server.stop()
        engine.close()
        return 1
    for notice in serving_notices(config, server.tokens):
        print(f"nbserve: {notice}", file=sys.stderr, flush=True)
    for api, url in server.urls.items():
        print(f"nbserve: {api} API at {url}", file=sys.stderr, flush=True)
    stop.wait()
    print("nbserve: stopping; answering requests in flight", file=sys.stderr, flush=True)
    server.stop()
    engine.close()
    return 0


def _serve_on_ray(args: argparse.Namespace, config) -> int:
    from nbserve import ray_serve
    from nbserve.display import served_line

    serving = ray_serve.connect(args.ray_address, http_address=args.inference_address,
                                config=config)
    stop = _stop_on_signals()  # after connecting: ray.init sets a SIGTERM handler of its own
    try:
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
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except NBServeError as e:
        print(f"nbserve {args.verb}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
