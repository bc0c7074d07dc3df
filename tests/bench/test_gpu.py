"""bench/gpu.py in ``--device cpu`` mode: the GPU measurement's script runs whole, here."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]


def test_the_gpu_benchmark_runs_on_the_cpu_and_writes_its_figures(tmp_path):
    out = tmp_path / "gpu"
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu.py"), str(out), "--device", "cpu",
         "--seconds", "1", "--models", "mobilenet_v3_small", "--clients", "4",
         "--batch-sizes", "1,4", "--torchserve-workers", "1"],
        capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((out / "gpu.json").read_text())
    model = results["models"]["mobilenet_v3_small"]
    assert model["limit"]["limit"] > 0 and set(model["limit"]["forward_by_batch"]) == {"1", "4"}
    assert set(model["servers"]) == {"nbserve (defaults)", "TorchServe (1 worker/GPU, batch 32)"}
    for points in model["servers"].values():
        (point,) = points.values()
        assert point["throughput"] > 0 and point["errors"] == 0
        assert point["gpu_util_pct"] is None  # no nvidia-smi here: said, not made up
    table = (out / "gpu.md").read_text()
    assert "| mobilenet_v3_small | nbserve (defaults) | 4 |" in table
