"""Each verb's flags, defined once: the CLI (:mod:`.main`) and the notebook magics build their
parsers from these, so ``nbserve serve --help`` and ``%serve?`` never drift apart."""

from __future__ import annotations

import argparse

from nbserve.store.archive import ARCHIVE_FORMATS, RUNTIMES
from nbserve.store.archiver import archive


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


def add_workflow_archive_arguments(parser: argparse.ArgumentParser,
                                   live: bool = False) -> None:
    """``torch-workflow-archiver`` 0.2.15's flags; with ``live`` (the magic), a workflow
    declared in the notebook may stand for the name, spec and handler."""
    if live:
        parser.add_argument("workflow", nargs="?",
                            help="A workflow declared with nbserve.workflow() (a variable).")
    parser.add_argument("--workflow-name", required=not live,
                        help="Workflow name; the archive is saved as WORKFLOW_NAME.war.")
    parser.add_argument("--spec-file", required=not live,
                        help="The workflow's YAML spec (models: and dag:).")
    parser.add_argument("--handler",
                        help="Python file with the workflow's function nodes.")
    parser.add_argument("--export-path", default=".",
                        help="Folder to save the archive in (default: the current folder).")
    parser.add_argument("-f", "--force", action="store_true",
                        help="Overwrite an existing archive of the same name.")
    parser.add_argument("--extra-files",
                        help="Comma-separated files or folders to include.")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """TorchServe's start flags that mean something here, and the three addresses."""
    parser.add_argument("--model-store", help="Folder of model archives (model_store).")
    parser.add_argument("--models", nargs="*", default=[],
                        help="Models to load: NAME=FILE.mar, FILE.mar, or all (every archive "
                             "in the model store).")
    parser.add_argument("--workflow-store",
                        help="Folder of workflow archives, .war (workflow_store; default: the "
                             "model store).")
    parser.add_argument("--ts-config", help="A TorchServe config.properties file.")
    parser.add_argument("--inference-address", help="Default http://127.0.0.1:8080.")
    parser.add_argument("--management-address", help="Default http://127.0.0.1:8081.")
    parser.add_argument("--metrics-address", help="Default http://127.0.0.1:8082.")
    parser.add_argument("--enable-model-api", action="store_true",
                        help="Allow registering and unregistering models over HTTP.")
    parser.add_argument("--disable-token-auth", action="store_true",
                        help="Answer without TorchServe's keys (anyone who reaches the "
                             "addresses may call them).")
    parser.add_argument("--grpc", action=argparse.BooleanOptionalAction,
                        help="Serve TorchServe's gRPC APIs too (inference 127.0.0.1:7070, "
                             "management :7071; pip install 'nbserve[grpc]'): on in nbserve "
                             "serve where grpcio is installed, as in TorchServe, off in a "
                             "kernel (enable_grpc).")
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


def add_snapshot_arguments(parser: argparse.ArgumentParser) -> None:
    """TorchServe's snapshot flag (nbserve.api.snapshot), for a server outside a kernel."""
    parser.add_argument("--ncs", "--no-config-snapshots", dest="no_config_snapshots",
                        action="store_true",
                        help="Neither start from the newest snapshot in logs/config nor write "
                             "snapshots there (TorchServe's --ncs).")


def add_background_arguments(parser: argparse.ArgumentParser) -> None:
    """``nbserve serve``'s TorchServe flags for a server in the background (see
    nbserve.cli.background); a kernel's server is the kernel's."""
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
    parser.add_argument("--tokenizer",
                        help="A variable holding the tokenizer of a language model served live "
                             "(a transformers causal LM): served for text generation.")
    parser.add_argument("--batch-size", type=int, help="Largest batch (default: this machine's).")
    parser.add_argument("--max-batch-delay", type=float,
                        help="The most milliseconds a batch may wait to fill (0, the default: "
                             "as long as the batching policy finds it pays).")
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
    """TorchServe benchmark-ab's parameters, with its meanings (defaults: see nbserve.benchmark.load)."""
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
    add_llm_bench_arguments(parser)


def add_bench_magic_arguments(parser: argparse.ArgumentParser) -> None:
    """``%bench``'s flags: a model this kernel serves, what to send, and how hard."""
    parser.add_argument("model_name", help="A model this kernel serves.")
    parser.add_argument("input", nargs="?", help="A file, a URL, or a variable: each request's "
                                                 "body (with --llm: the prompt, optional).")
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
    add_llm_bench_arguments(parser)


def add_llm_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """``--llm``: a language model measured over OpenAI's API (nbserve.benchmark.generation)."""
    parser.add_argument("--llm", action="store_true",
                        help="A language model: streamed chat completions at each of --streams "
                             "concurrent clients; tokens/s, time to first token, inter-token "
                             "latency.")
    parser.add_argument("--streams", default="1,8,32", help="With --llm: concurrent streams.")
    parser.add_argument("--seconds", type=float, default=10,
                        help="With --llm: seconds at each number of streams.")
    parser.add_argument("--max-tokens", type=int, default=64,
                        help="With --llm: each answer's max_tokens.")


def server_config(args: argparse.Namespace):
    """The ServerConfig that parsed ``serve`` arguments describe: config.properties, then flags,
    then ``TS_*`` environment variables where config.properties enables them (TorchServe's
    order)."""
    import os

    from nbserve.config import ServerConfig

    config = ServerConfig.from_properties(args.ts_config) if args.ts_config else ServerConfig()
    for key in ("model_store", "workflow_store", "inference_address", "management_address",
                "metrics_address", "access_log"):
        if getattr(args, key, None):
            config.values[key] = getattr(args, key)
    if args.enable_model_api:
        config.values["enable_model_api"] = True
    if args.disable_token_auth:
        config.values["disable_token_authorization"] = True
    if args.isolation:
        config.values["isolation"] = args.isolation
    if args.grpc is not None:
        config.values["enable_grpc"] = args.grpc
    if args.preprocess_threads:
        config.values["preprocess_threads"] = args.preprocess_threads
    config.apply_environment(os.environ)
    return config


def ray_placement(args: argparse.Namespace) -> dict:
    """What parsed ``serve`` arguments ask of Ray for each model's replicas."""
    return {"replicas": args.replicas, "min_replicas": args.min_replicas,
            "max_replicas": args.max_replicas, "num_cpus": args.num_cpus,
            "num_gpus": args.num_gpus}
