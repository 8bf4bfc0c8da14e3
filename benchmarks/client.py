"""Sequential call latency of superserve.Client (REST and gRPC, blocking and asyncio) next to
tritonclient's HTTP and gRPC clients, on one server.

The server runs Clipper+ on the smallest SubNet with one worker, so the compute per call is
small and the same for every client; each client makes ``--requests`` sequential infer calls
with the same image (after 20 unmeasured ones). Per client: the latency it measured (p50,
p99) and the part outside the server's clock (latency - queue_ms - compute_ms, p50): HTTP or
gRPC both ways, parsing, the router, the client's own encoding and decoding.

    python -m benchmarks.client [--requests 300]
"""
from __future__ import annotations

import argparse
import asyncio
import time
from typing import Callable

import numpy as np

from benchmarks._common import write_json
from superserve.bundle_layout import EMBEDDED_DIR, BundleLayout
from superserve.client import AsyncClient, Client
from superserve.scheduling.profile import LatencyProfile
from superserve.serving import ServerProcess

WARMUP = 20
# One call: (latency ms, queue_ms + compute_ms the server reported)
Call = Callable[[], tuple[float, float]]


def superserve_sync(url: str, image: np.ndarray, n: int) -> list[tuple[float, float]]:
    with Client(url) as client:
        def call() -> tuple[float, float]:
            t0 = time.perf_counter()
            p = client.infer(image, slo_ms=1000)
            return (time.perf_counter() - t0) * 1000, p.queue_ms + p.compute_ms
        return [call() for _ in range(n)]


def superserve_async(url: str, image: np.ndarray, n: int) -> list[tuple[float, float]]:
    async def run() -> list[tuple[float, float]]:
        async with AsyncClient(url) as client:
            out = []
            for _ in range(n):
                t0 = time.perf_counter()
                p = await client.infer(image, slo_ms=1000)
                out.append(((time.perf_counter() - t0) * 1000, p.queue_ms + p.compute_ms))
            return out
    return asyncio.run(run())


def triton_http(address: str, image: np.ndarray, n: int) -> list[tuple[float, float]]:
    import tritonclient.http as th

    client = th.InferenceServerClient(address)
    inp = th.InferInput("input", list(image.shape), "FP32")
    inp.set_data_from_numpy(image)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        params = client.infer("supernet", [inp], parameters={"slo_ms": 1000}).get_response()["parameters"]
        out.append(((time.perf_counter() - t0) * 1000, params["queue_ms"] + params["compute_ms"]))
    client.close()
    return out


def triton_grpc(address: str, image: np.ndarray, n: int) -> list[tuple[float, float]]:
    import tritonclient.grpc as tg

    client = tg.InferenceServerClient(address)
    inp = tg.InferInput("input", list(image.shape), "FP32")
    inp.set_data_from_numpy(image)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        params = client.infer("supernet", [inp], parameters={"slo_ms": 1000}).get_response().parameters
        out.append(((time.perf_counter() - t0) * 1000,
                    params["queue_ms"].double_param + params["compute_ms"].double_param))
    client.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=300)
    args = p.parse_args()
    smallest = min(LatencyProfile.load(BundleLayout(EMBEDDED_DIR).profile).subnets, key=lambda s: s.accuracy).id
    image = np.zeros((1, 1, 28, 28), dtype=np.float32)
    rows = []
    with ServerProcess(policy="clipper+", subnet=smallest, subnets=[smallest], workers=1, warmup_runs=1) as srv:
        grpc_url = f"grpc://{srv.grpc_address}"
        runs = [("superserve.Client", "rest", lambda n: superserve_sync(srv.http_url, image, n)),
                ("superserve.AsyncClient", "rest", lambda n: superserve_async(srv.http_url, image, n)),
                ("superserve.Client", "grpc", lambda n: superserve_sync(grpc_url, image, n)),
                ("superserve.AsyncClient", "grpc", lambda n: superserve_async(grpc_url, image, n)),
                ("tritonclient.http", "rest", lambda n: triton_http(srv.http_address, image, n)),
                ("tritonclient.grpc", "grpc", lambda n: triton_grpc(srv.grpc_address, image, n))]
        for name, protocol, run in runs:
            samples = np.array(run(WARMUP + args.requests)[WARMUP:])
            latency, outside = samples[:, 0], samples[:, 0] - samples[:, 1]
            rows.append({"client": name, "protocol": protocol, "p50_ms": float(np.percentile(latency, 50)),
                         "p99_ms": float(np.percentile(latency, 99)),
                         "outside_server_p50_ms": float(np.percentile(outside, 50))})
            r = rows[-1]
            print(f"{name:>24} {protocol:>4}: p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  "
                  f"outside the server's clock p50 {r['outside_server_p50_ms']:.3f} ms")
    write_json("client", {"command": "python -m benchmarks.client", "requests": args.requests, "subnet": smallest,
                          "rows": rows})


if __name__ == "__main__":
    main()
