"""Run a replay: split the trace over sender processes, start them together, show progress,
and merge what they saw into one :class:`ReplayRecords`.

``processes=1`` sends from the calling process (lowest start-up cost; fine up to about
the rate one Python core can issue). ``processes>1`` spawns that many sender processes,
each taking every n-th request of the trace, so the client stops being the bottleneck
before the server does. Children never import torch: they get ready-made bodies.
"""
from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from superserve.loadgen.payloads import PayloadSet
from superserve.loadgen.records import STATUS_NOT_SENT, ReplayRecords, classify
from superserve.loadgen.sender import Counters, SenderConfig, ShardResult, send_schedule
from superserve.workload.trace import Trace

# Seconds between the last sender being ready and the first scheduled send: room for every
# process to return from the start barrier before request 0 is due.
_START_MARGIN_S = 0.25

Progress = Callable[[int, int, int, int], None]  # (issued, answered, ok, total)


@dataclass
class ReplayRun:
    """A finished replay: per-request records plus facts about the run itself."""

    records: ReplayRecords
    trace: Trace
    config: SenderConfig
    processes: int
    wall_s: float
    errors: dict[str, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def _merge(shards: list[ShardResult], trace: Trace, labels: np.ndarray, slo_s: float) -> tuple[ReplayRecords, dict]:
    rec = ReplayRecords.empty(trace.arrivals, labels, slo_s)
    subnet_ix: dict[str, int] = {}
    outcome_ix: dict[str, int] = {}
    errors: dict[str, int] = {}
    for sh in shards:
        idx = sh.indices
        rec.lag_s[idx] = sh.lag_s
        rec.latency_s[idx] = sh.latency_s
        rec.status[idx] = sh.status
        rec.predicted[idx] = sh.predicted
        for key, c in sh.errors.items():
            errors[key] = errors.get(key, 0) + c
        for i, p in zip(idx.tolist(), sh.params):
            if not p:
                continue
            sid = p.get("subnet_id")
            if sid is not None:
                rec.subnet[i] = subnet_ix.setdefault(str(sid), len(subnet_ix))
            so = p.get("outcome")
            if so is not None:
                rec.server_outcome[i] = outcome_ix.setdefault(str(so), len(outcome_ix))
            for name, col in (("accuracy", rec.accuracy), ("queue_ms", rec.queue_ms),
                              ("compute_ms", rec.compute_ms), ("batch_size", rec.batch_size)):
                v = p.get(name)
                if isinstance(v, (int, float)):
                    col[i] = v
    rec.subnet_ids = list(subnet_ix)
    rec.server_outcomes = list(outcome_ix)
    rec.outcome = classify(rec.status, rec.latency_s, slo_s)
    return rec, errors


# --- one process -------------------------------------------------------------------------

async def _in_process(cfg: SenderConfig, trace: Trace, payloads: PayloadSet, progress: Progress | None,
                      refresh_s: float) -> ShardResult:
    counters = Counters()
    n = len(trace)
    done = asyncio.Event()

    async def report() -> None:
        while not done.is_set():
            progress(counters.issued, counters.answered, counters.ok, n)  # type: ignore[misc]
            try:
                await asyncio.wait_for(done.wait(), refresh_s)
            except asyncio.TimeoutError:
                pass
        progress(counters.issued, counters.answered, counters.ok, n)  # type: ignore[misc]

    reporter = asyncio.create_task(report()) if progress else None
    try:
        return await send_schedule(cfg, trace.arrivals, np.arange(n), payloads.bodies, payloads.header_lengths,
                                   start_at=None, counters=counters)
    finally:
        done.set()
        if reporter:
            await reporter


# --- several processes -------------------------------------------------------------------

def _shard_main(cfg: SenderConfig, arrivals: np.ndarray, indices: np.ndarray, bodies: list[bytes],
                header_lengths: list[int], slot: int, shared: Any, conn: Any) -> None:
    """Entry point of a sender process: warm up, wait for the common start time, send,
    send the result back over ``conn``."""
    counters = Counters()

    def ready() -> float:
        conn.send(("ready", slot))
        return float(conn.recv())  # the common start time (monotonic seconds)

    async def main() -> ShardResult:
        async def publish() -> None:
            while True:
                shared[3 * slot:3 * slot + 3] = [counters.issued, counters.answered, counters.ok]
                await asyncio.sleep(0.2)
        pub = asyncio.create_task(publish())
        try:
            return await send_schedule(cfg, arrivals, indices, bodies, header_lengths, start_at=None,
                                       counters=counters, on_ready=ready)
        finally:
            pub.cancel()
            shared[3 * slot:3 * slot + 3] = [counters.issued, counters.answered, counters.ok]

    try:
        conn.send(("done", asyncio.run(main())))
    except BaseException as e:  # report, never hang the parent
        conn.send(("failed", f"{type(e).__name__}: {e}"))
        raise


def _multi_process(cfg: SenderConfig, trace: Trace, payloads: PayloadSet, processes: int,
                   progress: Progress | None, refresh_s: float) -> list[ShardResult]:
    ctx = mp.get_context("spawn")  # the parent may hold torch threads; never fork it
    n = len(trace)
    shared = ctx.Array("q", 3 * processes, lock=False)
    procs, pipes = [], []
    for s in range(processes):
        idx = np.arange(s, n, processes)
        parent_end, child_end = ctx.Pipe()
        p = ctx.Process(target=_shard_main, daemon=True, name=f"loadgen-sender-{s}",
                        args=(cfg, trace.arrivals[idx], idx, payloads.bodies, payloads.header_lengths, s,
                              shared, child_end))
        p.start()
        procs.append(p)
        pipes.append(parent_end)
    try:
        for s, pipe in enumerate(pipes):
            kind, info = pipe.recv()
            if kind != "ready":
                raise RuntimeError(f"sender process {s} failed before the start: {info}")
        start_at = time.monotonic() + _START_MARGIN_S
        for pipe in pipes:
            pipe.send(start_at)
        results: list[ShardResult | None] = [None] * processes
        waiting = set(range(processes))
        while waiting:
            for s in list(waiting):
                if pipes[s].poll():
                    kind, info = pipes[s].recv()
                    if kind != "done":
                        raise RuntimeError(f"sender process {s} failed: {info}")
                    results[s] = info
                    waiting.discard(s)
                elif not procs[s].is_alive():
                    raise RuntimeError(f"sender process {s} died (exit code {procs[s].exitcode})")
            if progress:
                tot = [sum(shared[3 * s + c] for s in range(processes)) for c in range(3)]
                progress(tot[0], tot[1], tot[2], n)
            time.sleep(refresh_s)
        if progress:
            progress(n, n, sum(shared[3 * s + 2] for s in range(processes)), n)
        return [r for r in results if r is not None]
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()


def replay(trace: Trace, payloads: PayloadSet, cfg: SenderConfig, *, slo_ms: float, processes: int = 1,
           progress: Progress | None = None, refresh_s: float = 0.25) -> ReplayRun:
    """Replay ``trace`` against the server of ``cfg``; every request gets one record."""
    if processes < 1:
        raise ValueError("processes must be >= 1")
    t0 = time.monotonic()
    if processes == 1:
        shards = [asyncio.run(_in_process(cfg, trace, payloads, progress, refresh_s))]
    else:
        shards = _multi_process(cfg, trace, payloads, processes, progress, refresh_s)
    wall = time.monotonic() - t0
    labels = payloads.label_of(np.arange(len(trace)))
    rec, errors = _merge(shards, trace, labels, slo_ms / 1000.0)
    if np.any(rec.status == STATUS_NOT_SENT):  # a bug, not a server problem: say so loudly
        raise RuntimeError(f"{int(np.sum(rec.status == STATUS_NOT_SENT))} requests have no record")
    return ReplayRun(rec, trace, cfg, processes, wall, errors)
