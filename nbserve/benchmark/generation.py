"""A language model measured as its users measure one (vLLM's ``benchmark_serving``,
``transformers serve``'s): streamed chat completions over OpenAI's API from closed-loop
clients, at several numbers of concurrent streams, for some seconds each; generated tokens per
second, time to first token and the latency between tokens. ``nbserve bench --llm`` and
``%bench MODEL --llm``.

As with benchmark-ab's load (:mod:`.load`), the clients run in a process of its own, which
reports how busy it was: a load process that used most of a core was the limit, not the
server.
"""

from __future__ import annotations

import html
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

from nbserve.benchmark.load import GENERATOR_LIMIT
from nbserve.serving.stats import nearest_rank

#: The figures at each number of streams, in the report's order.
COLUMNS = ("streams", "tok/s", "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms", "ITL p99 ms",
           "requests", "failed", "load busy")
#: What the clients ask, in turn, when no prompts are given.
DEFAULT_PROMPTS = ("Hi", "Tell me a story.", "What can you do?", "Where is the cat?")


@dataclass
class StreamsResult:
    """What ``streams`` concurrent clients got in ``elapsed_s``."""

    streams: int
    elapsed_s: float
    #: Completion tokens, as each answer's ``usage`` counts them.
    tokens: int
    ttft_ms: list[float]
    itl_ms: list[float]
    #: Answers by status (200, 4xx/5xx, or the client's error).
    statuses: Counter
    #: The share of one core the load process used.
    generator_busy: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)

    def figures(self) -> dict[str, str]:
        """:data:`COLUMNS`, as the report shows them."""
        def ms(values, q):
            value = nearest_rank(values, q)
            return "-" if value is None else f"{value:.1f}"
        values = (self.streams, f"{self.tokens_per_s:.0f}", ms(self.ttft_ms, 50),
                  ms(self.ttft_ms, 99), ms(self.itl_ms, 50), ms(self.itl_ms, 99),
                  sum(self.statuses.values()), self.failed, f"{self.generator_busy:.0%}")
        return dict(zip(COLUMNS, map(str, values)))


@dataclass
class GenerationBench:
    """The figures at each number of streams."""

    model: str
    max_tokens: int
    results: list[StreamsResult]

    def __str__(self) -> str:
        rows = [r.figures() for r in self.results]
        widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in COLUMNS}
        lines = [f"{self.model}: streamed chat completions of up to {self.max_tokens} tokens",
                 "  ".join(c.rjust(widths[c]) for c in COLUMNS)]
        lines += ["  ".join(r[c].rjust(widths[c]) for c in COLUMNS) for r in rows]
        busy = [r.streams for r in self.results if r.generator_busy >= GENERATOR_LIMIT]
        if busy:
            lines.append(f"at {', '.join(map(str, busy))} streams the load process was the "
                         "limit (most of a core), not the server")
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        rows = [r.figures() for r in self.results]
        head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r.values())
                       + "</tr>" for r in rows)
        return (f'<div class="nbserve-bench"><p>{html.escape(str(self).splitlines()[0])}</p>'
                f'<table style="white-space:nowrap"><tr>{head}</tr>{body}</table></div>')


def measure(base_url: str, model: str, *, streams: list[int], seconds: float = 10,
            max_tokens: int = 64, prompts: list[str] | None = None, key: str | None = None,
            on_progress=None) -> GenerationBench:
    """Load ``base_url`` (OpenAI's API root, ``.../v1``) at each number of ``streams`` for
    ``seconds``, from a load process; ``on_progress(done, total)`` after each level."""
    spec = {"url": base_url.rstrip("/") + "/chat/completions", "model": model,
            "streams": streams, "seconds": seconds, "max_tokens": max_tokens,
            "prompts": list(prompts or DEFAULT_PROMPTS), "key": key}
    process = subprocess.Popen([sys.executable, "-m", "nbserve.benchmark.generation",
                                json.dumps(spec)], stdout=subprocess.PIPE, text=True)
    results = []
    for line in process.stdout:
        figures = json.loads(line)
        figures["statuses"] = Counter({int(k) if k.isdigit() else k: v
                                       for k, v in figures["statuses"].items()})
        results.append(StreamsResult(**figures))
        if on_progress is not None:
            on_progress(len(results), len(streams))
    if process.wait() != 0:
        raise RuntimeError(f"the load process failed (exit {process.returncode})")
    return GenerationBench(model, max_tokens, results)


# The load, in a process of its own.

def _stream(connection, path: str, body: bytes, headers: dict) -> tuple:
    """One streamed chat completion: (status, completion tokens, time to first token, the
    gaps between tokens), in seconds."""
    started = time.perf_counter()
    connection.request("POST", path, body, headers)
    response = connection.getresponse()
    if response.status != 200:
        response.read()
        return response.status, 0, None, []
    first, last, gaps, tokens = None, None, [], 0
    while line := response.readline():
        if not line.startswith(b"data: {"):
            continue
        chunk = json.loads(line[6:])
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
        if any(choice["delta"].get("content") for choice in chunk.get("choices", ())):
            now = time.perf_counter()
            if first is None:
                first = now - started
            else:
                gaps.append(now - last)
            last = now
    return 200, tokens, first, gaps


def _load_main(spec: dict) -> None:
    """For each number of streams: closed-loop clients for the seconds given, then a line of
    JSON with their figures."""
    import http.client

    parts = urlsplit(spec["url"])
    connection_class = (http.client.HTTPSConnection if parts.scheme == "https"
                        else http.client.HTTPConnection)
    headers = {"Content-Type": "application/json"}
    if spec.get("key"):
        headers["Authorization"] = f"Bearer {spec['key']}"
    prompts = spec["prompts"]
    for streams in spec["streams"]:
        lock = threading.Lock()
        figures = {"tokens": 0, "ttft_ms": [], "itl_ms": [], "statuses": Counter()}
        until = time.monotonic() + spec["seconds"]

        def client(index: int) -> None:
            connection, k = None, index
            while time.monotonic() < until:
                body = json.dumps({
                    "model": spec["model"], "max_tokens": spec["max_tokens"],
                    "messages": [{"role": "user", "content": prompts[k % len(prompts)]}],
                    "temperature": 0, "stream": True,
                    "stream_options": {"include_usage": True}}).encode()
                k += streams
                if connection is None:
                    connection = connection_class(parts.hostname, parts.port, timeout=600)
                try:
                    status, tokens, first, gaps = _stream(connection, parts.path, body, headers)
                except (OSError, http.client.HTTPException) as error:
                    status, tokens, first, gaps = type(error).__name__, 0, None, []
                    connection.close()
                    connection = None
                with lock:
                    figures["statuses"][status] += 1
                    figures["tokens"] += tokens
                    figures["ttft_ms"] += [] if first is None else [first * 1000]
                    figures["itl_ms"] += [gap * 1000 for gap in gaps]

        started, cpu = time.monotonic(), time.process_time()
        threads = [threading.Thread(target=client, args=(i,), daemon=True)
                   for i in range(streams)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        figures["statuses"] = {str(k): v for k, v in figures["statuses"].items()}
        print(json.dumps({"streams": streams, "elapsed_s": elapsed,
                          "generator_busy": (time.process_time() - cpu) / elapsed, **figures}),
              flush=True)


if __name__ == "__main__":
    _load_main(json.loads(sys.argv[1]))
