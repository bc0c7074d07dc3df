"""Throughput on Ray Serve with 1 and 2 replicas, against nbserve in one process, the real
TorchServe (tuned) and the in-process limit, on the same ``.mar``, in one run.

A local Ray cluster with this machine's cores is started for the run (``ray start``); each Ray
configuration is ``nbserve serve --on ray --replicas N``, one CPU per replica. ``echo`` (a
handler with no model) measures what the request path itself costs on each server.

    python bench/on_ray.py                                 # echo and mobilenet_v3_small, 4 and 16 clients
    python bench/on_ray.py --models densenet161 --seconds 20
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import models  # noqa: E402
from engine import in_subprocess  # noqa: E402
from rest import NBServe, TorchServe, free_port, load_in_subprocess, wait_for  # noqa: E402

RAY = str(Path(sys.executable).with_name("ray"))


class RayCluster:
    """A head node with every core, started with ``ray start`` and stopped at the end."""

    def __enter__(self):
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
        self.address = f"127.0.0.1:{free_port()}"
        self.http_port = free_port()
        subprocess.run([RAY, "start", "--head", "--port", self.address.split(":")[1],
                        "--num-cpus", str(os.cpu_count()), "--include-dashboard", "false",
                        "--disable-usage-stats"], env=self.env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc):
        subprocess.run([RAY, "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class OnRay:
    """``nbserve serve --on ray`` with ``replicas`` replicas of one CPU each (Ray's proxy asks
    for no key)."""

    key = None

    def __init__(self, mar: Path, cluster: RayCluster, replicas: int):
        self.mar, self.cluster, self.replicas = mar, cluster, replicas
        self.label = f"nbserve on Ray ({replicas} replica{'s' * (replicas > 1)}, 1 CPU each)"
        self.port = cluster.http_port

    def __enter__(self):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nbserve", "serve", "--models", f"{self.mar.stem}={self.mar}",
             "--on", "ray", "--ray-address", self.cluster.address, "--replicas", str(self.replicas),
             "--inference-address", f"http://127.0.0.1:{self.port}"],
            env=self.cluster.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for line in self.process.stderr:
            if "management APIs at" in line:
                break
        else:
            raise RuntimeError(f"nbserve serve --on ray exited with {self.process.wait()}")
        wait_for(f"http://127.0.0.1:{self.port}/ping")
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait(120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="echo,mobilenet_v3_small")
    parser.add_argument("--clients", default="4,16")
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()

    print("| model | server | clients | req/s | of limit | p50 (ms) | errors |")
    print("|---|---|---|---|---|---|---|")
    with RayCluster() as cluster:
        for name in args.models.split(","):
            mar = models.build(name)
            limit = None
            if name != "echo":
                limit = in_subprocess("limit", name, "--seconds", str(args.seconds))["limit"]
                print(f"| {name} | in-process limit | - | {limit:.1f} | 1.00 | - | - |", flush=True)
            servers = [NBServe(mar), TorchServe(mar, tuned=True),
                       OnRay(mar, cluster, 1), OnRay(mar, cluster, 2)]
            for server in servers:
                with server:
                    for clients in (int(c) for c in args.clients.split(",")):
                        run = load_in_subprocess(server.port, f"/predictions/{mar.stem}", clients,
                                                 args.seconds, server.key)
                        share = f"{run['throughput'] / limit:.2f}" if limit else "-"
                        p50 = f"{run['p50_ms']:.1f}" if run["p50_ms"] is not None else "-"
                        print(f"| {name} | {server.label} | {clients} | {run['throughput']:.1f} "
                              f"| {share} | {p50} | {run['errors']} |", flush=True)


if __name__ == "__main__":
    main()
