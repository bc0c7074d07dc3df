"""The whole GPU measurement in one run: in-process limits, nbserve over HTTP, TorchServe 0.12.

On the same ``.mar`` files (densenet161 and mobilenet_v3_small, random weights, the
``image_classifier`` handler), per model:

- the in-process limit on the device, sweeping the batch size: the whole handler on one thread,
  and the forward pass alone (preprocessing left out);
- ``nbserve serve`` with its defaults over HTTP at 1, 16 and 64 clients;
- TorchServe 0.12 with 1 and with 4 workers per GPU, batch 32 (5 ms delay);
- GPU utilisation and memory, sampled with ``nvidia-smi`` during each point.

Figures go to ``OUT/gpu.json`` and ``OUT/gpu.md``. The load runs in several processes, so one
Python client process is not what limits a GPU server; each point also records how busy the
load processes were. With ``--tests`` the CUDA tests run first (``tests/test_cuda.py``).

    python bench/gpu.py OUT --tests                 # on a GPU machine: about 7 minutes
    python bench/gpu.py OUT --device cpu --seconds 1 --models mobilenet_v3_small \\
        --clients 1,4 --batch-sizes 1,4 --torchserve-workers 1     # a smoke test, anywhere
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import models  # noqa: E402
from engine import in_subprocess  # noqa: E402
from rest import NBServe, TorchServe, load_in_subprocess  # noqa: E402

REPO = Path(__file__).parent.parent


class GPUSampler:
    """``nvidia-smi`` sampled every 200 ms while a point runs: mean utilisation and peak memory."""

    def __init__(self):
        self.available = shutil.which("nvidia-smi") is not None
        self.samples: list[tuple[float, float]] = []

    def __enter__(self):
        self.samples = []
        if self.available:
            self._process = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                 "--format=csv,noheader,nounits", "-i", "0", "-lms", "200"],
                stdout=subprocess.PIPE, text=True)
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
        return self

    def _read(self):
        for line in self._process.stdout:
            try:
                util, memory = (float(v) for v in line.split(","))
            except ValueError:
                continue
            self.samples.append((util, memory))

    def __exit__(self, *exc):
        if self.available:
            self._process.terminate()
            self._process.wait()

    def summary(self) -> dict:
        if not self.samples:
            return {"gpu_util_pct": None, "gpu_memory_mib": None}
        return {"gpu_util_pct": round(statistics.mean(u for u, _ in self.samples), 1),
                "gpu_memory_mib": max(m for _, m in self.samples)}


def parallel_load(server, path: str, clients: int, seconds: float, processes: int) -> dict:
    """``clients`` closed-loop clients spread over up to ``processes`` load processes."""
    processes = max(1, min(processes, clients))
    shares = [clients // processes + (i < clients % processes) for i in range(processes)]
    with ThreadPoolExecutor(processes) as pool:
        runs = list(pool.map(lambda n: load_in_subprocess(server.port, path, n, seconds,
                                                          server.key), shares))
    p50s = [run["p50_ms"] for run in runs if run["p50_ms"] is not None]
    return {"throughput": sum(run["throughput"] for run in runs),
            "errors": sum(run["errors"] for run in runs),
            "p50_ms": statistics.median(p50s) if p50s else None}


def measure(args) -> dict:
    cuda = args.device == "cuda"
    clients = [int(c) for c in args.clients.split(",")]
    results = {"device": args.device, "seconds": args.seconds, "models": {}}
    if cuda:
        import torch

        results["gpu"] = torch.cuda.get_device_name(0)
    sampler = GPUSampler()
    for name in args.models.split(","):
        mar = models.build(name)
        model = results["models"][name] = {}
        with sampler:
            model["limit"] = in_subprocess("limit", name, "--seconds", str(args.seconds * 2),
                                           "--device", args.device,
                                           "--batch-sizes", args.batch_sizes)
        model["limit"].update(sampler.summary())
        print(f"{name}: in-process limit {model['limit']['limit']:.1f} img/s (batch "
              f"{model['limit']['best_batch']}), forward {model['limit']['forward_limit']:.1f}",
              flush=True)
        servers = [("nbserve (defaults)",
                    lambda: NBServe(mar, extra=() if cuda else ("--ts-config", _cpu_only())))]
        for workers in (int(w) for w in args.torchserve_workers.split(",") if w):
            servers.append((f"TorchServe ({workers} worker{'s' * (workers != 1)}/GPU, batch 32)",
                            lambda w=workers: TorchServe(mar, tuned=True, workers=w, batch_size=32,
                                                         gpu=cuda)))
        model["servers"] = {}
        for label, make in servers:
            points = model["servers"][label] = {}
            with make() as server:
                for n in clients:
                    with sampler:
                        point = parallel_load(server, f"/predictions/{mar.stem}", n, args.seconds,
                                              args.load_processes)
                    point.update(sampler.summary())
                    points[n] = point
                    print(f"{name}: {label}, {n} clients: {point['throughput']:.1f} req/s, "
                          f"p50 {point['p50_ms'] or 0:.1f} ms, {point['errors']} errors, "
                          f"GPU {point['gpu_util_pct']}%", flush=True)
    return results


def _cpu_only() -> str:
    """A config.properties that keeps nbserve's models off any GPU (for --device cpu)."""
    path = Path(tempfile.mkdtemp(prefix="bench-gpu-")) / "config.properties"
    path.write_text("number_of_gpu=0\n")
    return str(path)


def markdown(results: dict) -> str:
    lines = [f"Device: {results.get('gpu', results['device'])}; {results['seconds']:g} s a point.",
             "", "| model | server | clients | req/s | of limit | of forward limit | p50 (ms) "
             "| errors | GPU util % | GPU MiB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, model in results["models"].items():
        limit = model["limit"]
        lines.append(f"| {name} | in-process limit (batch {limit['best_batch']}; forward alone: "
                     f"{limit['forward_limit']:.1f} at batch {limit['forward_best_batch']}) | - "
                     f"| {limit['limit']:.1f} | 1.00 | {limit['limit'] / limit['forward_limit']:.2f} "
                     f"| {limit['batch1_ms']:.1f} (batch 1) | - | {limit['gpu_util_pct']} "
                     f"| {limit['gpu_memory_mib']} |")
        for label, points in model["servers"].items():
            for n, point in points.items():
                lines.append(
                    f"| {name} | {label} | {n} | {point['throughput']:.1f} "
                    f"| {point['throughput'] / limit['limit']:.2f} "
                    f"| {point['throughput'] / limit['forward_limit']:.2f} "
                    f"| {point['p50_ms'] or 0:.1f} | {point['errors']} | {point['gpu_util_pct']} "
                    f"| {point['gpu_memory_mib']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="Folder for gpu.json and gpu.md.")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--models", default=",".join(models.MODELS))
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--seconds", type=float, default=6, help="Measured seconds a point.")
    parser.add_argument("--batch-sizes", default="1,8,16,32,64,128",
                        help="Batch sizes the in-process limit sweeps.")
    parser.add_argument("--torchserve-workers", default="1,4",
                        help="TorchServe's workers per GPU to measure ('' for none).")
    parser.add_argument("--load-processes", type=int, default=4,
                        help="Processes the clients are spread over.")
    parser.add_argument("--tests", action="store_true", help="Run tests/test_cuda.py first.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.tests:
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:warnings", "-rs",
                                str(REPO / "tests" / "test_cuda.py")],
                               capture_output=True, text=True, cwd=REPO)
        (args.out / "test_cuda.txt").write_text(tests.stdout + tests.stderr)
        print(tests.stdout[-3000:], flush=True)
    started = time.monotonic()
    results = measure(args)
    results["wall_s"] = round(time.monotonic() - started, 1)
    (args.out / "gpu.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (args.out / "gpu.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
