"""``%archive``, ``%archive_workflow``, ``%serve`` and ``%predict``: TorchServe's workflow in
notebook cells.

``%load_ext nbserve`` registers them. ``%archive`` and ``%serve`` build their parsers from
:mod:`nbserve.cli.main`'s ``add_*_arguments``, so their flags and ``nbserve archive`` / ``nbserve
serve``'s never drift apart. The engine they drive lives in this kernel
(:data:`nbserve.notebook.session.current`); its HTTP APIs answer while cells run.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import ArgDecorator, argument, magic_arguments, parse_argstring

from nbserve.api.access import key_notice
from nbserve.api.routes import served_line
from nbserve.api.startup import find_archive
from nbserve.cli.arguments import (
    add_archive_arguments,
    add_bench_magic_arguments,
    add_model_arguments,
    add_predict_arguments,
    add_serve_arguments,
    add_workflow_archive_arguments,
    ray_placement,
    run_archive,
    server_config,
)
from nbserve.errors import InferenceError, NBServeError
from nbserve.handlers.text_generation import serves_text_generation
from nbserve.notebook import benchmarks, restore, session
from nbserve.notebook.display import device_text, openai_snippet, shown, thumbnail_png
from nbserve.notebook.session import as_body
from nbserve.notebook.widgets import PredictionUpload
from nbserve.progress import Progress
from nbserve.store.live_workflow import LiveWorkflow


class _Arguments(ArgDecorator):
    """Adds a verb's flags, as :mod:`nbserve.cli.main` defines them, to a magic's parser."""

    def __init__(self, add):
        self.add = add

    def add_to_parser(self, parser, group):
        self.add(parser)


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
            progress = Progress.archive(f"Archiving {args.model_name}")
        try:
            return run_archive(args, progress)
        except NBServeError as e:
            raise UsageError(str(e)) from None
        finally:
            if progress is not None:
                progress.close()

    @line_magic
    @magic_arguments()
    @_Arguments(partial(add_workflow_archive_arguments, live=True))
    def archive_workflow(self, line: str) -> Path:
        """Make a workflow archive (.war) that nbserve and TorchServe both serve, from
        torch-workflow-archiver's flags or from a workflow declared with nbserve.workflow()
        (its node archives are copied beside it); returns its path::

            %archive_workflow pipeline --export-path wf-store
        """
        args = parse_argstring(self.archive_workflow, line)
        workflow = self._variable(args.workflow)
        if args.workflow and not isinstance(workflow, LiveWorkflow):
            raise UsageError(f"{args.workflow} is not a workflow declared with "
                             "nbserve.workflow().")
        if workflow is None and not (args.workflow_name and args.spec_file):
            raise UsageError("%archive_workflow needs a workflow declared with "
                             "nbserve.workflow(), or --workflow-name and --spec-file.")
        try:
            return session.archive_workflow(workflow or args.workflow_name, args.spec_file,
                                            args.handler, extra_files=args.extra_files,
                                            export_path=args.export_path, force=args.force)
        except NBServeError as e:
            raise UsageError(str(e)) from None

    @line_magic
    @magic_arguments()
    @_Arguments(add_model_arguments)
    @_Arguments(add_serve_arguments)
    @argument("--restore", action="store_true",
              help="Serve again what this notebook served before its kernel restarted.")
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
        if not (args.source or args.models or args.model_store or args.ts_config
                or args.restore):
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
        if args.restore:
            snapshot = restore.read()
            if snapshot is None:
                raise UsageError("This notebook has nothing to restore: no kernel of its "
                                 "served models before.")
            for line in restore.restore(session.current, snapshot):
                print(line)
        failed_before = dict(session.current.engine.failures)
        tokenizer = self._variable(args.tokenizer)
        if args.tokenizer and tokenizer is None:
            raise UsageError(f"--tokenizer {args.tokenizer}: no such variable.")
        served = session.serve(self._source(args), handler=self._handler(args), models=args.models,
                               tokenizer=tokenizer,
                               extra_files=_names(args.extra_files), config=config,
                               **_model_settings(args))
        for name, failure in session.current.engine.failures.items():
            if failed_before.get(name) is not failure:
                print(f"{name} ({failure.source}) failed to load:\n{failure.traceback}")
        urls = session.current.server.urls
        for version in served:
            for notice in version.notices:
                print(notice)
            if version.requirements is not None:
                where = ("first on its worker processes' sys.path"
                         if version.config.isolation == "process" else
                         f"last on this kernel's sys.path ({sys.executable}), so they cannot "
                         "shadow the kernel's own packages")
                print(f"{version.name}'s requirements are installed in {version.requirements}, "
                      f"{where}.")
            workers = len(version.workers)
            where = f"({device_text(version)}, {workers} worker{'s' * (workers != 1)})"
            print(served_line(version.name, version.version, where, urls["inference"]))
            if serves_text_generation(version.handler):
                print(openai_snippet(version.name, urls["inference"],
                                     bool(session.current.keys)))

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
            print(served_line(model.name, model.version, f"on Ray ({model.describe_placement()})",
                              ray.url))
        if ray.tokens is not None:
            print(key_notice(ray.tokens) + " In Python: nbserve.notebook.session.current.ray.tokens.keys.")

    def _source(self, args):
        """What SOURCE names: a variable's value (a live object, or a path), else the text."""
        if not args.source:
            return None
        value = self._variable(args.source)
        if value is not None and not isinstance(value, (str, os.PathLike, LiveWorkflow)) \
                and not args.model_name:
            raise UsageError(f"Serving {args.source} live needs --model-name.")
        return args.source if value is None else value

    def _variable(self, name: str | None):
        """The value of the notebook's variable ``name``; None if it names none."""
        return self.shell.user_ns.get(name) if name and name.isidentifier() else None

    def _handler(self, args):
        """``--handler``: a variable holding a handler, or the text (a default handler, a
        file)."""
        value = self._variable(args.handler)
        return args.handler if value is None else value

    def _archive_path(self, args) -> Path:
        """The archive ``%serve``'s SOURCE names: a path, a variable holding one, or a file in
        the model store."""
        value = self._variable(args.source)
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise UsageError(f"{args.source} is not an archive; serving a live model runs in "
                             "this kernel (leave out --on ray), or %archive it first.")
        return find_archive(value or args.source, args.model_store)

    @line_magic
    @magic_arguments()
    @_Arguments(add_predict_arguments)
    def predict(self, line: str):
        """Run an input through a served model: the answer is the JSON the HTTP API sends.

        Image answers show beside the image; a handler's exception is raised with its
        traceback. With no input, shows an upload widget for several images at once.
        """
        args = parse_argstring(self.predict, line)
        handler_error = None
        try:
            served = session.current.get(args.model_name, args.version)
            if serves_text_generation(getattr(served, "handler", None)) and args.input:
                return self._chat(args)
            if args.input is None:
                return PredictionUpload(args.model_name, version=args.version)
            data = self._input(args.input)
            pieces = []  # a streaming handler's parts (printed as they come if text), the answer
            for piece in session.predict(args.model_name, data, version=args.version, stream=True):
                if pieces and isinstance(pieces[-1], str):
                    print(pieces[-1], end="", flush=True)
                pieces.append(piece)
        except InferenceError as e:
            if e.status >= 500 and e.__cause__ is None:  # raised in a worker process
                raise UsageError(f"{e}\n{e.traceback}") from None
            if e.status < 500:
                raise UsageError(str(e)) from None
            handler_error = e.__cause__
        except NBServeError as e:
            raise UsageError(str(e)) from None
        if handler_error is not None:
            raise handler_error  # the handler's own exception, its traceback into its code
        value = pieces[-1]
        if len(pieces) > 1:  # streamed: the whole answer, its parts joined where they are text
            print()
            value = "".join(pieces) if all(isinstance(p, str) for p in pieces) else pieces
        return shown(value, thumbnail_png(data) if isinstance(data, bytes) else None)

    @line_magic
    @magic_arguments()
    @_Arguments(add_bench_magic_arguments)
    def bench(self, line: str):
        """Measure a served model as TorchServe's benchmark-ab does, from a separate process:
        throughput, p50/p90/p99, errors by status, a latency histogram, and how close the
        server comes to the same handler's in-process speed on the same input::

            %bench densenet161 cat.jpg --concurrency 16 --requests 400

        With ``--sweep``, tries batch sizes and worker counts within ``--budget`` seconds,
        plots throughput against p99, and recommends the setting for ``--p99-ms``::

            %bench densenet161 cat.jpg --sweep --budget 60 --p99-ms 500

        With ``--llm``, a language model: streamed chat completions over OpenAI's API at each
        of ``--streams`` concurrent clients; tokens/s, time to first token, inter-token
        latency. INPUT (optional) is the prompt, or a variable holding one or a list of them,
        asked in turn::

            %bench chat --llm --streams 1,8,32 --seconds 10
        """
        args = parse_argstring(self.bench, line)
        try:
            session.current.get(args.model_name)
            if args.llm:
                prompts = args.input and self._prompts(args.input)
                progress = Progress(f"%bench {args.model_name} --llm", unit="levels")
                result = benchmarks.bench_generation(
                    args.model_name, prompts or None,
                    streams=_numbers(args.streams), seconds=args.seconds,
                    max_tokens=args.max_tokens, on_progress=progress)
                progress.close()
                return result
            if args.input is None:
                raise UsageError("%bench needs INPUT: a file, a URL or a variable sent as "
                                 "each request's body (or --llm for a language model).")
            data = self._input(args.input)
            if args.sweep:
                return benchmarks.bench_sweep(
                    args.model_name, data, batch_sizes=_numbers(args.batch_sizes),
                    workers=_numbers(args.workers),
                    concurrencies=_numbers(args.concurrencies or str(args.concurrency)),
                    budget_s=args.budget, p99_ms=args.p99_ms, content_type=args.content_type)
            progress = Progress.requests(f"%bench {args.model_name}")
            result = benchmarks.bench(args.model_name, data, concurrency=args.concurrency,
                                      requests=args.requests, content_type=args.content_type,
                                      on_progress=progress)
            progress.close()
            return result
        except NBServeError as e:
            raise UsageError(str(e)) from None

    def _chat(self, args) -> str:
        """``%predict chat "Hi"``: the language model's answer (greedy), printed as its tokens
        come. INPUT is the message, or a variable holding it or a list of OpenAI messages."""
        value = self._text(args.input)
        messages = value if isinstance(value, list) else [{"role": "user", "content": str(value)}]
        body = {"endpoint": "chat.completions", "messages": messages, "temperature": 0}
        texts = []
        for part in session.predict(args.model_name, body, version=args.version, stream=True):
            if "choices" not in part:  # a bad request's answer
                raise UsageError(part.get("message", str(part)))
            text = part["choices"][0]["text"]
            texts.append(text)
            print(text, end="", flush=True)
        print()
        return StreamedText("".join(texts))

    def _prompts(self, text: str) -> list[str]:
        """``%bench --llm``'s INPUT: a prompt, or a list of prompts, each a user's message."""
        value = self._text(text)
        prompts = [value] if isinstance(value, str) else value
        if not (isinstance(prompts, list) and prompts
                and all(isinstance(p, str) for p in prompts)):
            raise UsageError(f"%bench --llm asks prompts: {text} is neither a prompt nor a "
                             "list of them (text).")
        return prompts

    def _text(self, text: str) -> Any:
        """A message given on the line: the variable it names, else its text (IPython's
        argument parser keeps a quoted argument's quotes)."""
        value = self._variable(text)
        if value is not None:
            return value
        quoted = len(text) > 1 and text[0] in "'\"" and text[-1] == text[0]
        return text[1:-1] if quoted else text

    def _input(self, text: str) -> Any:
        """What ``%predict``'s INPUT names, as the body an HTTP client would send."""
        if text.isidentifier() and text in self.shell.user_ns:
            return as_body(self.shell.user_ns[text])
        if text.startswith(("http://", "https://")):
            with urllib.request.urlopen(text, timeout=60) as response:
                return response.read()
        path = Path(text).expanduser()
        if path.is_file():
            return path.read_bytes()
        raise UsageError(f"{text} is neither a file, a URL, nor a variable.")


class StreamedText(str):
    """An answer already printed as it streamed: kept as the cell's value, not shown again."""

    def _ipython_display_(self) -> None:
        pass


def _numbers(text: str) -> list[int]:
    return [int(n) for n in _names(text)]


def _names(text: str | None) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def _model_settings(args) -> dict:
    """What ``%serve``'s flags set for the one model it serves, as the engine takes them."""
    return dict(model_name=args.model_name, version=args.version, batch_size=args.batch_size,
                max_batch_delay=args.max_batch_delay, initial_workers=args.workers,
                response_timeout=args.response_timeout, isolation=args.isolation,
                preprocess_threads=args.preprocess_threads)
