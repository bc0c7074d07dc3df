"""``%archive``, ``%serve`` and ``%predict``: TorchServe's workflow in notebook cells.

``%load_ext nbserve`` registers them. ``%archive`` and ``%serve`` build their parsers from
:mod:`nbserve.cli`'s ``add_*_arguments``, so their flags and ``nbserve archive`` / ``nbserve
serve``'s never drift apart. The engine they drive lives in this kernel
(:data:`nbserve.session.current`); its HTTP APIs answer while cells run.
"""

from __future__ import annotations

import io
import os
import queue
import sys
import urllib.request
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import ArgDecorator, argument, magic_arguments, parse_argstring
from PIL import Image

from nbserve import session
from nbserve.cli import (TerminalProgress, add_archive_arguments, add_serve_arguments,
                         ray_placement, run_archive, server_config)
from nbserve.display import shown, thumbnail_png
from nbserve.errors import InferenceError, NBServeError
from nbserve.live import live_model
from nbserve.widgets import ArchiveProgress, PredictionUpload


class _Arguments(ArgDecorator):
    """Adds a verb's flags, as :mod:`nbserve.cli` defines them, to a magic's parser."""

    def __init__(self, add):
        self.add = add

    def add_to_parser(self, parser, group):
        self.add(parser)


def add_model_arguments(parser) -> None:
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


@magics_class
class NBServeMagics(Magics):
    @line_magic
    @magic_arguments()
    @_Arguments(add_archive_arguments)
    def archive(self, line: str) -> str:
        """Make a model archive (.mar) that nbserve and TorchServe both serve; returns its path."""
        args = parse_argstring(self.archive, line)
        progress = None
        if not args.quiet:
            progress = self._progress(f"Archiving {args.model_name}")
        try:
            return run_archive(args, progress)
        except NBServeError as e:
            raise UsageError(str(e)) from None
        finally:
            if progress is not None:
                progress.close()

    def _progress(self, label: str):
        if getattr(self.shell, "kernel", None) is not None:
            return ArchiveProgress(label)
        return TerminalProgress(label)

    @line_magic
    @magic_arguments()
    @_Arguments(add_model_arguments)
    @_Arguments(add_serve_arguments)
    def serve(self, line: str):
        """Serve models from this kernel over TorchServe's REST API (ports 8080, 8081, 8082).

        With no arguments, shows what is served. Serving a name again replaces it, answering
        requests in flight first. With ``--on ray``, the archive runs as replicas on Ray Serve
        instead, behind the same paths on Ray's HTTP proxy::

            %serve model-store/densenet161.mar --on ray --replicas 2
        """
        args = parse_argstring(self.serve, line)
        if args.stop is not None:
            print(session.current.stop(args.stop or None))
            return None
        if not (args.source or args.models or args.model_store or args.ts_config):
            return session.current.status()
        try:
            config = server_config(args)
            for warning in config.warnings:
                print(f"Warning: {warning}")
            if args.on == "ray":
                self._serve_on_ray(args, config)
            else:
                self._serve_here(args, config)
        except (NBServeError, OSError) as e:
            raise UsageError(str(e)) from None
        return session.current.status()

    def _serve_here(self, args, config) -> None:
        for notice in session.current.start(config):
            print(notice)
        failed_before = dict(session.current.engine.failures)
        served = session.current.serve_models(config, args.models) if (
            args.models or config.load_models) else []
        for name, failure in session.current.engine.failures.items():
            if failed_before.get(name) is not failure:
                print(f"{name} ({failure.source}) failed to load:\n{failure.traceback}")
        if args.source:
            served.append(self._serve_source(args))
        urls = session.current.server.urls
        for version in served:
            if version.requirements is not None:
                print(f"{version.name}'s requirements are installed in {version.requirements}, "
                      f"first on this kernel's sys.path ({sys.executable}).")
            workers = len(version.workers)
            device = "cuda" if version.config.gpu_ids else "cpu"
            print(f"Serving {version.name} {version.version} ({device}, {workers} worker"
                  f"{'s' * (workers != 1)}): {urls['inference']}/predictions/{version.name}")

    def _serve_on_ray(self, args, config) -> None:
        ray = session.current.on_ray(args.ray_address, http_address=args.inference_address,
                                     config=config)
        placement = ray_placement(args)
        deployed = ray.deploy_models(config, args.models, **placement) if (
            args.models or config.load_models) else []
        if args.source:
            path = self._archive_path(args)
            deployed.append(ray.deploy(path, handler=args.handler, **_model_settings(args),
                                       **placement))
        for model in deployed:
            print(f"Serving {model.name} {model.version} on Ray ({model.describe_placement()}): "
                  f"{ray.url}/predictions/{model.name}")

    def _serve_source(self, args):
        settings = _model_settings(args)
        value = self.shell.user_ns.get(args.source) if args.source.isidentifier() else None
        if value is None or isinstance(value, (str, os.PathLike)):
            return session.current.serve(self._archive_path(args), handler=args.handler,
                                         **settings)
        if not args.model_name:
            raise UsageError(f"Serving {args.source} live needs --model-name.")
        handler = args.handler
        if handler and handler.isidentifier() and handler in self.shell.user_ns:
            handler = self.shell.user_ns[handler]
        extra_files = [f.strip() for f in (args.extra_files or "").split(",") if f.strip()]
        live = live_model(value, args.model_name, handler=handler, version=args.version or "1.0",
                          extra_files=extra_files)
        settings.pop("version")
        return session.current.serve(live, **settings)

    def _archive_path(self, args) -> Path:
        """The archive ``%serve``'s SOURCE names: a path, a variable holding one, or a file in
        the model store."""
        value = self.shell.user_ns.get(args.source) if args.source.isidentifier() else None
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise UsageError(f"{args.source} is not an archive; serving a live model runs in "
                             "this kernel (leave out --on ray), or %archive it first.")
        path = Path(value or args.source).expanduser()
        if not path.exists() and args.model_store:
            path = Path(args.model_store) / path
        if not path.exists():
            raise UsageError(f"{args.source} is neither an archive file nor a variable.")
        return path

    @line_magic
    @magic_arguments()
    @argument("model_name", help="A model this kernel serves.")
    @argument("input", nargs="?",
              help="A file, a URL, or a variable (bytes, a PIL image, a tensor, text). Without "
                   "it, an upload widget.")
    @argument("--version", help="The model's version (default: its default version).")
    def predict(self, line: str):
        """Run an input through a served model: the answer is the JSON the HTTP API sends.

        Image answers show beside the image; a handler's exception is raised with its
        traceback. With no input, shows an upload widget for several images at once.
        """
        args = parse_argstring(self.predict, line)
        handler_error = None
        try:
            session.current.get(args.model_name, args.version)
            if args.input is None:
                return PredictionUpload(args.model_name, version=args.version)
            data = self._input(args.input)
            parts: queue.Queue = queue.Queue()
            future = session.current.submit(args.model_name, {"body": data},
                                            version=args.version, on_part=parts.put)
            streamed = _show_parts(parts, future)
            prediction = future.result()
        except InferenceError as e:
            if e.status < 500 or e.__cause__ is None:
                raise UsageError(str(e)) from None
            handler_error = e.__cause__
        except NBServeError as e:
            raise UsageError(str(e)) from None
        if handler_error is not None:
            raise handler_error  # the handler's own exception, its traceback into its code
        value = prediction.value
        if streamed:  # the whole answer: its parts joined where they are text
            pieces = streamed + [value]
            value = "".join(pieces) if all(isinstance(p, str) for p in pieces) else pieces
        return shown(value, thumbnail_png(data) if isinstance(data, bytes) else None)

    def _input(self, text: str) -> Any:
        """What ``%predict``'s INPUT names, as the body an HTTP client would send."""
        if text.isidentifier() and text in self.shell.user_ns:
            return request_body(self.shell.user_ns[text])
        if text.startswith(("http://", "https://")):
            with urllib.request.urlopen(text, timeout=60) as response:
                return response.read()
        path = Path(text).expanduser()
        if path.is_file():
            return path.read_bytes()
        raise UsageError(f"{text} is neither a file, a URL, nor a variable.")


def _show_parts(parts: queue.Queue, future) -> list:
    """Print text parts of a streaming answer as they arrive, until the answer is in; the
    parts, in order."""
    seen = []
    while not (future.done() and parts.empty()):
        try:
            part = parts.get(timeout=0.05)
        except queue.Empty:
            continue
        seen.append(part)
        if isinstance(part, str):
            print(part, end="", flush=True)
    if any(isinstance(p, str) for p in seen):
        print()
    return seen


def _model_settings(args) -> dict:
    """What ``%serve``'s flags set for the one model it serves, as the engine takes them."""
    return dict(model_name=args.model_name, version=args.version, batch_size=args.batch_size,
                max_batch_delay=args.max_batch_delay, initial_workers=args.workers,
                response_timeout=args.response_timeout)


def request_body(value: Any) -> Any:
    """A Python value as the request body a client would send: images as PNG bytes, tensors
    and arrays as (JSON) lists, text as text."""
    if isinstance(value, Image.Image):
        out = io.BytesIO()
        value.save(out, format="PNG")
        return out.getvalue()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, os.PathLike):
        return Path(value).read_bytes()
    if hasattr(value, "tolist") and not isinstance(value, (bytes, str)):
        return value.tolist()
    return value
