"""The serving ceiling without a server: the worker configuration running one SubNet at its
largest batch in a tight loop.

Each of ``workers`` spawned processes does what a serving worker does per batch (actuate the
SubNet, run the batch from a preallocated input, copy the logits into a preallocated output),
with the same torch thread count, and nothing else: no router, no HTTP, no queueing. The
sum of their images per second is the rate a perfect server could reach with that SubNet;
``max_rate_at_999 / raw_inference_rate`` says how much of it the live server keeps.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class RawRate:
    images_per_s: float  # all workers together
    per_worker: list[float]
    batch: int
    batch_ms_p50: float  # median batch time over all workers
    seconds: float


def _loop(bundle: str, subnet_id: str, batch: int, threads: int, seconds: float, conn) -> None:
    """Child: load, warm, say ready, wait for the common start time, loop, send batch times."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    from superserve.bundle_layout import BundleLayout
    from superserve.supernet import load_supernet

    torch.set_num_threads(threads)
    layout = BundleLayout(bundle)
    model = load_supernet(layout.weights, layout.norm)
    inputs = torch.randn(batch, 1, 28, 28)
    with torch.inference_mode():
        model.actuate(subnet_id)
        outputs = torch.empty_like(model(inputs))
        for _ in range(5):  # warm: allocator growth and kernel choice
            outputs.copy_(model(inputs))
        conn.send("ready")
        start_at = float(conn.recv())
        while time.monotonic() < start_at:
            time.sleep(0.0005)
        times = []
        t_end = start_at + seconds
        while True:
            t0 = time.perf_counter()
            model.actuate(subnet_id)
            outputs.copy_(model(inputs))
            times.append(time.perf_counter() - t0)
            if time.monotonic() >= t_end:
                break
    conn.send(times)


def measure_raw_rate(bundle: str, subnet_id: str, *, workers: int = 1, threads: int = 1, batch: int = 16,
                     seconds: float = 3.0) -> RawRate:
    """Run ``workers`` processes (``threads`` torch threads each) concurrently for ``seconds``."""
    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    for _ in range(workers):
        a, b = ctx.Pipe()
        pipes.append(a)
        procs.append(ctx.Process(target=_loop, args=(bundle, subnet_id, batch, threads, seconds, b), daemon=True))
    for p in procs:
        p.start()
    try:
        for a in pipes:
            if a.recv() != "ready":
                raise RuntimeError("raw-rate worker failed to start")
        start_at = time.monotonic() + 0.1
        for a in pipes:
            a.send(start_at)
        per, all_times = [], []
        for a in pipes:
            times = a.recv()
            per.append(batch * len(times) / sum(times))
            all_times += times
        all_times.sort()
        return RawRate(sum(per), per, batch, 1000.0 * all_times[len(all_times) // 2], seconds)
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.terminate()
