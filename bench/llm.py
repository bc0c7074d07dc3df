"""Text generation side by side: nbserve serve against ``transformers serve
--continuous-batching`` on the same model and the same chat requests, streamed with OpenAI's
client, in rounds with the servers rotating; and one stream against transformers' own
``generate`` in the same process (the in-process limit of one stream).

    python bench/llm.py --rounds 3 --streams 1,8,32 --seconds 10

(``transformers serve`` needs ``pip install 'transformers[serving]' accelerate``.)

Without ``--model``, the tests' tiny chat model is built (tests/support/llm.py, a few seconds);
greedy, so both servers generate the same tokens. Figures: generated tokens/s over the window,
time to first token and inter-token latency (median), and errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.llm import QUESTIONS  # noqa: E402 - the tiny model's own questions


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:3]} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


def start_nbserve(folder: Path, workdir: Path, max_num_seqs: int,
                  isolation: str = "process") -> tuple:
    port = free_port()
    store = workdir / "nbserve"
    store.mkdir(exist_ok=True)
    (store / "model-config.yaml").write_text(
        f"handler:\n  max_num_seqs: {max_num_seqs}\n  max_model_len: 256\n")
    subprocess.run([sys.executable, "-m", "nbserve", "archive", "--model-name", "chat",
                    "--version", "1.0", "--handler", "text_generation", "--extra-files",
                    str(folder), "--config-file", "model-config.yaml", "--export-path", ".",
                    "-f", "-q"], check=True, cwd=store, capture_output=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "nbserve", "serve", "--models", "chat=chat.mar",
         "--disable-token-auth", "--ncs", "--no-grpc", "--isolation", isolation,
         f"--inference-address=http://127.0.0.1:{port}",
         f"--management-address=http://127.0.0.1:{free_port()}",
         f"--metrics-address=http://127.0.0.1:{free_port()}"],
        cwd=store, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(f"http://127.0.0.1:{port}/v1/models", process)
    return process, f"http://127.0.0.1:{port}/v1", "chat"


def start_transformers(folder: Path, workdir: Path, max_num_seqs: int) -> tuple:
    port = free_port()
    blocks = max_num_seqs * 256 // 32
    process = subprocess.Popen(
        ["transformers", "serve", str(folder), "--continuous-batching", "--port", str(port),
         "--host", "127.0.0.1", "--cb-block-size", "32", "--cb-num-blocks", str(blocks),
         "--max-model-len", "256", "--log-level", "warning"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(f"http://127.0.0.1:{port}/v1/models", process)
    return process, f"http://127.0.0.1:{port}/v1", str(folder)


async def load(base_url: str, model: str, streams: int, seconds: float) -> dict:
    """``streams`` closed-loop clients, each asking greedy chats one after another."""
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0,
                                timeout=120)
    tokens, first, gaps, errors = 0, [], [], 0
    ends = time.monotonic() + seconds

    async def one(i: int) -> None:
        nonlocal tokens, errors
        k = i
        while time.monotonic() < ends:
            question = QUESTIONS[k % len(QUESTIONS)]
            k += streams
            began = last = time.perf_counter()
            got = 0
            try:
                stream = await client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": question}],
                    temperature=0, max_tokens=64, stream=True,
                    stream_options={"include_usage": True})
                usage = None
                async for chunk in stream:
                    if chunk.usage is not None:
                        usage = chunk.usage
                    if chunk.choices and chunk.choices[0].delta.content:
                        now = time.perf_counter()
                        (gaps if got else first).append(now - (last if got else began))
                        last, got = now, got + 1
                tokens += usage.completion_tokens if usage else got
            except Exception:  # noqa: BLE001 - counted, as a lost request
                errors += 1

    began = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(streams)))
    elapsed = time.monotonic() - began
    await client.close()
    return {"tok_s": tokens / elapsed,
            "ttft_ms": 1000 * statistics.median(first) if first else None,
            "itl_ms": 1000 * statistics.median(gaps) if gaps else None, "errors": errors}


def in_process(folder: Path, seconds: float) -> dict:
    """One stream's limit: transformers' generate, greedy, in this process."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokens, k = 0, 0
    ends = time.monotonic() + seconds
    began = time.monotonic()
    while time.monotonic() < ends:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": QUESTIONS[k % len(QUESTIONS)]}],
            add_generation_prompt=True, return_tensors="pt")
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=64, do_sample=False)
        tokens += out.shape[1] - ids.shape[1]
        k += 1
    return {"tok_s": tokens / (time.monotonic() - began)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="A Hugging Face causal LM folder (default: the tiny one).")
    parser.add_argument("--streams", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None, help="Write the results as JSON here.")
    parser.add_argument("--servers", default="nbserve serve,nbserve serve --isolation thread,"
                        "transformers serve --continuous-batching",
                        help="Which servers, by name, comma-separated.")
    args = parser.parse_args()
    streams = [int(s) for s in args.streams.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="nbserve-bench-llm-"))
    folder = Path(args.model) if args.model else None
    if folder is None:
        from tests.support.llm import build_tiny_chat_model
        folder = build_tiny_chat_model(workdir / "chat")
    servers = {"nbserve serve": start_nbserve,
               "nbserve serve --isolation thread": lambda *a: start_nbserve(*a, "thread"),
               "transformers serve --continuous-batching": start_transformers}
    servers = {name: servers[name] for name in args.servers.split(",")}
    results: dict[str, dict[int, list[dict]]] = {name: {n: [] for n in streams}
                                                 for name in servers}
    limit = []
    for round_ in range(args.rounds):
        limit.append(in_process(folder, args.seconds)["tok_s"])
        order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
        for name in order:
            process, base_url, model = servers[name](folder, workdir, max(streams))
            try:
                asyncio.run(load(base_url, model, 1, 3))  # warm up
                for n in streams:
                    figures = asyncio.run(load(base_url, model, n, args.seconds))
                    results[name][n].append(figures)
                    print(f"round {round_ + 1} {name} {n} streams: {figures}", flush=True)
            finally:
                process.terminate()
                process.wait(30)
    print(f"\nin-process generate, one stream: {statistics.median(limit):.0f} tok/s "
          f"({min(limit):.0f}-{max(limit):.0f})")
    print("| server | streams | tok/s (median) | range | TTFT p50 (ms) | ITL p50 (ms) | errors |")
    print("|---|---|---|---|---|---|---|")
    for name, by_streams in results.items():
        for n, runs in by_streams.items():
            rates = [r["tok_s"] for r in runs]
            ttft = statistics.median(r["ttft_ms"] for r in runs if r["ttft_ms"] is not None)
            itl = statistics.median(r["itl_ms"] for r in runs if r["itl_ms"] is not None)
            print(f"| {name} | {n} | {statistics.median(rates):.0f} | {min(rates):.0f}-"
                  f"{max(rates):.0f} | {ttft:.1f} | {itl:.2f} | "
                  f"{sum(r['errors'] for r in runs)} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"limit": limit, "results": results}, indent=2))


if __name__ == "__main__":
    main()
