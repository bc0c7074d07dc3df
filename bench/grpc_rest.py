"""gRPC against REST: one ``nbserve serve --grpc``, the same model, photo and clients.

Closed-loop clients from a separate process each way: REST as bench/rest.py sends it (PUT
/predictions/NAME on a keep-alive connection), gRPC as TorchServe's clients do (Predictions with
``input={"data": photo}`` on one channel per client).

    python bench/grpc_rest.py                          # mobilenet_v3_small, 1/4/16 clients
    python bench/grpc_rest.py --model densenet161 --clients 4 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import models  # noqa: E402
from engine import closed_loop  # noqa: E402
from rest import NBServe, free_port, load_in_subprocess  # noqa: E402

PREDICTIONS = "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions"


def grpc_load(address: str, model: str, clients: int, seconds: float, key: str) -> dict:
    """In this process (run as ``--grpc-load``): closed-loop Predictions calls."""
    import statistics
    import threading

    import grpc

    from nbserve.api.grpc import messages

    photo, local = models.photo(), threading.local()
    request = messages.PredictionsRequest(model_name=model, input={"data": photo})
    metadata = (("authorization", f"Bearer {key}"),)

    def call() -> bool:
        if not hasattr(local, "predict"):
            local.predict = grpc.insecure_channel(address).unary_unary(
                PREDICTIONS, request_serializer=messages.PredictionsRequest.SerializeToString,
                response_deserializer=messages.PredictionResponse.FromString)
        try:
            local.predict(request, metadata=metadata, timeout=300)
            return True
        except grpc.RpcError:
            return False

    latencies, elapsed, errors = closed_loop(call, clients, seconds)
    return {"throughput": len(latencies) / elapsed, "errors": errors,
            "p50_ms": statistics.median(latencies) * 1000 if latencies else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v3_small")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--grpc-load", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.grpc_load:
        address, model, clients, key = args.grpc_load
        print(json.dumps(grpc_load(address, model, int(clients), args.seconds, key)))
        return
    mar = models.build(args.model)
    grpc_port = free_port()
    config = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-grpc-{grpc_port}.properties"
    config.write_text(f"grpc_inference_port={grpc_port}\ngrpc_management_port={free_port()}\n")
    print(f"{args.model}, nbserve serve --grpc (defaults), {args.seconds:g} s a point\n")
    print("| clients | REST req/s | gRPC req/s | gRPC / REST | REST p50 (ms) | gRPC p50 (ms) |")
    print("|---|---|---|---|---|---|")
    with NBServe(mar, extra=("--grpc", "--ts-config", str(config))) as server:
        time.sleep(1)
        for clients in (int(c) for c in args.clients.split(",")):
            rest = load_in_subprocess(server.port, f"/predictions/{mar.stem}", clients,
                                      args.seconds, server.key)
            run = subprocess.run([sys.executable, __file__, "--grpc-load", f"127.0.0.1:{grpc_port}",
                                  mar.stem, str(clients), server.key, "--seconds",
                                  str(args.seconds)], capture_output=True, text=True, check=True)
            grpc = json.loads(run.stdout.strip().splitlines()[-1])
            print(f"| {clients} | {rest['throughput']:.1f} | {grpc['throughput']:.1f} "
                  f"| {grpc['throughput'] / rest['throughput']:.2f} | {rest['p50_ms']:.1f} "
                  f"| {grpc['p50_ms']:.1f} |", flush=True)
    config.unlink()


if __name__ == "__main__":
    main()
