"""``%serve`` in a Jupyter kernel against ``nbserve serve``, the same archive and the same load
(nbserve's benchmark-ab load, from a process of its own), in rounds, alternating: whether a
model served in the kernel (thread workers, sharing the kernel's process) is slower than the
same model served from a shell, and by how much.

    python bench/in_kernel.py --model mobilenet_v3_small --clients 8 --requests 400 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import models  # noqa: E402

from nbserve.benchmark.load import BenchSettings, measure  # noqa: E402
from tests.support.helpers import nbserve_serve  # noqa: E402
from tests.support.kernel import Kernel  # noqa: E402


def in_kernel(mar: Path, workdir: Path, clients: int, requests: int) -> float:
    """Requests a second to a model ``%serve`` runs in a fresh kernel."""
    photo = workdir / "cat.jpg"
    with Kernel(workdir, timeout=600) as kernel:
        kernel.ok(f"%load_ext nbserve\n%serve {mar}")
        kernel.ok(f"result = %bench {mar.stem} {photo} --concurrency {clients} "
                  f"--requests {requests}")
        return kernel.value("result.throughput")


def from_shell(mar: Path, workdir: Path, clients: int, requests: int, isolation: str) -> float:
    """Requests a second to the same model under ``nbserve serve``."""
    process, ports, _ = nbserve_serve("--models", f"{mar.stem}={mar}", "--isolation", isolation,
                                      "--no-grpc", cwd=workdir)
    try:
        key = json.loads((workdir / "key_file.json").read_text())["inference"]["key"]
        settings = BenchSettings(input=str(workdir / "cat.jpg"), concurrency=clients,
                                 requests=requests)
        url = f"http://127.0.0.1:{ports['inference']}/predictions/{mar.stem}"
        return measure(settings, url, key=key).throughput
    finally:
        process.terminate()
        process.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenet_v3_small")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    mar = models.build(args.model)
    workdir = Path(tempfile.mkdtemp(prefix="nbserve-bench-kernel-"))
    (workdir / "cat.jpg").write_bytes(models.photo())
    ways = {"%serve in a kernel (thread workers)": lambda: in_kernel(
                mar, workdir, args.clients, args.requests),
            "nbserve serve --isolation thread": lambda: from_shell(
                mar, workdir, args.clients, args.requests, "thread"),
            "nbserve serve (process workers)": lambda: from_shell(
                mar, workdir, args.clients, args.requests, "process")}
    runs: dict[str, list[float]] = {name: [] for name in ways}
    for round_ in range(args.rounds):
        order = list(ways) if round_ % 2 == 0 else list(reversed(ways))
        for name in order:
            runs[name].append(ways[name]())
            print(f"round {round_ + 1} {name}: {runs[name][-1]:.1f} req/s", flush=True)
    print(f"| {args.model}, {args.clients} clients | req/s (median) | range |")
    print("|---|---|---|")
    for name, values in runs.items():
        print(f"| {name} | {statistics.median(values):.1f} | {min(values):.1f}-"
              f"{max(values):.1f} |")


if __name__ == "__main__":
    main()
