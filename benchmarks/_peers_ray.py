"""Ray Serve peer of benchmarks/peers.py: one deployment (one replica, one torch thread)
serving one extracted SubNet (or the no-op model) with ``@serve.batch(max_batch_size=16)``.

    python -m benchmarks._peers_ray --model smallest --port 8124 [--ingress proxy|direct]

POST / {"input": [784 floats]} -> {"class": int, "logits": [10 floats]}.

Ingress:
  proxy   Ray Serve's default: the HTTP proxy actor on --port forwards to the replica.
  direct  Ray Serve's direct ingress (RAY_SERVE_ENABLE_DIRECT_INGRESS=1, part of its
          "throughput optimized" mode): the ingress replica itself serves HTTP, no proxy;
          its port is taken from [--port + 1, --port + 50) and printed as READY_PORT
          (Ray 2.60 still starts a proxy on --port; it is not used).
  --throughput-optimized  Ray Serve's documented "throughput optimized" switch
          (RAY_SERVE_THROUGHPUT_OPTIMIZED=1): direct ingress plus user code on the main loop,
          no stderr request log, GC frozen after start-up.
All are driven by the same HTTP client. Ray runs as a private local instance
(``ray.init(address="local", num_cpus=2, include_dashboard=False)``, bound to 127.0.0.1);
Ray's token auth (on by default for a new local cluster) guards Ray's own RPCs, not Serve's
HTTP ingress, so it is left as Ray sets it up. Prints "READY_PORT <port>" once serving.
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ingress", choices=("proxy", "direct"), default="proxy")
    ap.add_argument("--throughput-optimized", action="store_true",
                    help="RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (implies direct ingress; user code and router on "
                         "the replica's main loop, no per-request log to stderr, GC frozen after start-up)")
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--batch-wait-timeout", type=float, default=0.002, help="seconds")
    a = ap.parse_args()
    if a.throughput_optimized:
        os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
        a.ingress = "direct"
    if a.ingress == "direct":  # read by ray.serve at import: set first
        os.environ["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "1"
        os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] = str(a.port + 1)
        os.environ["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"] = str(a.port + 50)
        os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT"] = str(a.port + 50)
        os.environ["RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT"] = str(a.port + 100)
        # Shutdown only: an ingress replica's drain is floored at this (default 30 s), which
        # would make every stop of the benchmark wait half a minute; nothing is left to drain.
        os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = "1"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ray
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    serve.start(http_options={"host": "127.0.0.1", "port": a.port})

    @serve.deployment(num_replicas=1, max_ongoing_requests=256, ray_actor_options={"num_cpus": 1})
    class SubNet:
        def __init__(self, model: str) -> None:
            from benchmarks._peers_models import Predictor

            self.predict = Predictor(model)  # torch.set_num_threads(1) inside

        @serve.batch(max_batch_size=a.max_batch_size, batch_wait_timeout_s=a.batch_wait_timeout)
        async def infer(self, rows: list[list[float]]) -> list[list[float]]:
            return self.predict(rows)

        async def __call__(self, request: Request) -> JSONResponse:
            body = await request.json()
            out = await self.infer(body["input"])
            return JSONResponse({"class": max(range(len(out)), key=out.__getitem__), "logits": out})

    serve.run(SubNet.bind(a.model), name="peers", route_prefix="/")
    port = a.port
    if a.ingress == "direct":
        port = _direct_port(a.port)
    # SIGTERM or SIGINT: shut Serve and Ray down (explicit handlers: a parent started in the
    # background by a shell may hand SIGINT down ignored).
    import signal

    def _stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(f"READY_PORT {port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("shutting down", flush=True)
        serve.shutdown()
        ray.shutdown()
        print("stopped", flush=True)


def _direct_port(base: int) -> int:
    """The port the ingress replica listens on (the first of the range that accepts)."""
    import socket

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for p in range(base + 1, base + 50):
            with socket.socket() as s:
                s.settimeout(0.2)
                if s.connect_ex(("127.0.0.1", p)) == 0:
                    return p
        time.sleep(0.5)
    print("no direct-ingress port found", file=sys.stderr)
    sys.exit(3)


if __name__ == "__main__":
    main()
