"""``%bench`` from the kernel: a model this kernel serves, measured over its own HTTP API as
benchmark-ab does, and swept over batch sizes and workers (``%bench --sweep``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nbserve.notebook.session import as_body, current


def bench(model_name: str, data: Any, *, concurrency: int = 10, requests: int = 100,
          content_type: str = "application/jpg", on_progress=None, limit: bool = True):
    """Measure a model this process serves over its HTTP API, as benchmark-ab does: the load
    in a process of its own, then the same handler's in-process limit on the same input."""
    from nbserve.benchmark.load import BenchSettings, in_process_limit, measure

    server, body = current.server, _http_body(data)
    settings = BenchSettings(input=data if isinstance(data, (str, os.PathLike)) else "<variable>",
                             content_type=content_type, concurrency=concurrency,
                             requests=requests, inference_model_url=f"predictions/{model_name}")
    version = current.engine.get(model_name)
    settings.batch_size, settings.workers = version.config.batch_size, len(version.workers)
    settings.batch_delay = version.config.max_batch_delay
    result = measure(settings, f"{server.urls['inference']}/predictions/{model_name}", body=body,
                     key=current.keys.get("inference"), metrics_url=server.urls["metrics"],
                     on_progress=on_progress)
    if limit:  # the body as the HTTP API hands it to the handler: JSON parsed
        result.limit = in_process_limit(version, json.loads(body) if "json" in content_type
                                        else body)
    return result


def bench_generation(model_name: str, prompts: list[str] | None, *, streams: list[int],
                     seconds: float, max_tokens: int, on_progress=None):
    """Measure a language model this process serves over its OpenAI API, from a load
    process, at each number of concurrent ``streams``."""
    from nbserve.benchmark.generation import measure

    return measure(f"{current.server.urls['inference']}/v1", model_name, streams=streams,
                   seconds=seconds, max_tokens=max_tokens, prompts=prompts,
                   key=current.keys.get("inference"), on_progress=on_progress)


def bench_sweep(model_name: str, data: Any, *, batch_sizes: list[int], workers: list[int],
                concurrencies: list[int], budget_s: float, p99_ms: float | None,
                content_type: str = "application/jpg"):
    """Serve the model with each batch size and worker count in turn, measure each at each
    concurrency within ``budget_s``, recommend one for ``p99_ms``, then serve it as before."""
    from nbserve.benchmark.load import BenchSettings, measure
    from nbserve.benchmark.sweep import sweep

    server, body = current.server, _http_body(data)
    version = current.engine.get(model_name)
    archive, config = version.archive, version.config
    original = (config.batch_size, config.min_workers)

    def apply(batch_size: int, worker_count: int) -> None:
        current.serve(archive, model_name=model_name, version=version.version,
                      batch_size=batch_size, initial_workers=worker_count,
                      max_batch_delay=config.max_batch_delay, isolation=config.isolation)

    def run(clients: int, seconds: float):
        settings = BenchSettings(input="<sweep>", content_type=content_type,
                                 concurrency=clients, requests=10**9,
                                 inference_model_url=f"predictions/{model_name}")
        return measure(settings, f"{server.urls['inference']}/predictions/{model_name}",
                       body=body, key=current.keys.get("inference"), seconds=seconds)

    try:
        result = sweep(apply, run, batch_sizes=batch_sizes, workers=workers,
                       concurrencies=concurrencies, budget_s=budget_s, p99_ms=p99_ms)
    finally:
        apply(*original)
    if result.recommended:
        batch, worker_count, _ = result.recommended
        result.serve_line = (f"%serve {archive.source} --model-name {model_name} "
                             f"--batch-size {batch} --workers {worker_count}")
    return result


def _http_body(data: Any) -> bytes:
    """What a client would send for ``data``: a file's bytes, bytes, text, or JSON."""
    if isinstance(data, (str, os.PathLike)) and Path(data).is_file():
        return Path(data).read_bytes()
    body = as_body(data)
    if isinstance(body, bytes):
        return body
    return body.encode() if isinstance(body, str) else json.dumps(body).encode()
