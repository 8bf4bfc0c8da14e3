"""Shared pieces of the live reliability benchmarks (overload, faults, soak) and their tests:
process memory, a no-batching profile, and a replay that records what came back.

Every figure here comes from a real `superserve serve` process and the open-loop client
(superserve.loadgen) in its own process(es); nothing is simulated.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from superserve.loadgen import SenderConfig, payloads_from_bundle, replay, summarize
from superserve.loadgen.records import CONN_ERROR, HTTP_ERROR, OVERLOADED, SHED, TIMEOUT, ReplayRecords
from superserve.scheduling.profile import LatencyProfile
from superserve.serving import ServerProcess
from superserve.workload import Trace, poisson

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def default_bundle() -> str:
    import os

    from superserve.bundle_layout import EMBEDDED_DIR
    return os.environ.get("SUPERSERVE_BUNDLE", str(EMBEDDED_DIR))


# --- memory ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rss:
    router_mb: float
    workers_mb: tuple[float, ...]

    @property
    def total_mb(self) -> float:
        return self.router_mb + sum(self.workers_mb)

    def to_dict(self) -> dict[str, Any]:
        return {"router_mb": round(self.router_mb, 2), "workers_mb": [round(w, 2) for w in self.workers_mb],
                "total_mb": round(self.total_mb, 2)}


def rss(srv: ServerProcess) -> Rss:
    """Resident memory of the router process and of each current worker (MiB)."""
    mb = 1024.0 * 1024.0
    router = psutil.Process(srv.pid).memory_info().rss / mb
    workers = []
    for pid in srv.worker_pids:
        try:
            workers.append(psutil.Process(pid).memory_info().rss / mb)
        except psutil.NoSuchProcess:
            workers.append(float("nan"))
    return Rss(router, tuple(workers))


def growth_pct(before: float, after: float) -> float:
    return round(100.0 * (after - before) / before, 2) if before > 0 else float("nan")


# --- a no-batching profile --------------------------------------------------------------------
def single_subnet_profile(bundle: str, out: Path, *, max_batch: int) -> tuple[Path, str, LatencyProfile]:
    """The bundle's most accurate SubNet alone, profiled batch sizes cut to ``max_batch``:
    a configuration whose capacity is low enough that 10x of it stays within what a
    Python client on a small machine can send. Returns (path, subnet id, profile)."""
    full = LatencyProfile.load(Path(bundle) / "profile.json")
    top = full.largest
    data = full.subset([top.id]).to_dict()
    for s in data["subnets"]:
        s["latency_p50_ms"] = s["latency_p50_ms"][:max_batch]
        s["latency_p99_ms"] = s["latency_p99_ms"][:max_batch]
    if "batch_sizes" in data:
        data["batch_sizes"] = data["batch_sizes"][:max_batch]
    out.write_text(json.dumps(data))
    return out, top.id, LatencyProfile.load(out)


# --- replay ---------------------------------------------------------------------------------
def run_trace(srv: ServerProcess, trace: Trace, *, slo_ms: float, processes: int = 1,
              timeout_s: float = 10.0, margin_ms: float = 0.0) -> tuple[ReplayRecords, dict[str, Any]]:
    """Replay ``trace``; attainment is judged against ``slo_ms`` at the client, the server is
    sent ``slo_ms - margin_ms`` (room for the HTTP path it cannot see)."""
    payloads = payloads_from_bundle(srv.config.bundle, slo_ms=slo_ms - margin_ms, outputs=["class_index"])
    cfg = SenderConfig(srv.http_url, "/v2/models/supernet/infer", timeout_s=timeout_s,
                       headers=srv.auth_headers)
    run = replay(trace, payloads, cfg, slo_ms=slo_ms, processes=processes)
    return run.records, summarize(run.records, wall_s=run.wall_s)


def accounting(rec: ReplayRecords) -> dict[str, int]:
    """Sent vs answered. Every scheduled request has a record (the runner guarantees it);
    'answered' means an HTTP status came back (in time, late, shed, 429, refused, error)."""
    sent = len(rec)
    no_answer = int(np.sum((rec.outcome == TIMEOUT) | (rec.outcome == CONN_ERROR)))
    return {"requests_sent": sent, "responses_received": sent - no_answer, "no_answer": no_answer,
            "shed_or_unavailable": int(np.sum(rec.outcome == SHED)),
            "rejected_429": int(np.sum(rec.outcome == OVERLOADED)),
            "http_errors": int(np.sum(rec.outcome == HTTP_ERROR))}


def pcts(values: np.ndarray) -> dict[str, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return {"n": 0}
    return {"n": int(v.size), "p50": round(float(np.percentile(v, 50)), 3),
            "p99": round(float(np.percentile(v, 99)), 3), "max": round(float(v.max()), 3)}


def measure_sustainable(srv, profile_capacity: float, slo_ms: float, *, seconds: float = 2.0, margin_ms: float = 0.0,
                        fractions=(0.05, 0.1, 0.2, 0.35, 0.5, 0.7), target: float = 0.95) -> tuple[float, dict]:
    """The highest probed Poisson rate (fractions of the profile's capacity) answered at
    least ``target`` in time, measured at the client: router, HTTP, IPC and the client on the
    same cores included. Probes stop at the first miss; a first second of light load is not
    counted (fresh connections, first batches)."""
    run_trace(srv, poisson(0.05 * profile_capacity, 1.0, seed=99), slo_ms=slo_ms, margin_ms=margin_ms)
    best, probes = 0.0, {}
    for f in fractions:
        rate = f * profile_capacity
        _, s = run_trace(srv, poisson(rate, seconds, seed=int(f * 100)), slo_ms=slo_ms, margin_ms=margin_ms)
        probes[round(rate, 1)] = s["slo_attainment"]
        if s["slo_attainment"] < target:
            break
        best = rate
    if best == 0.0:  # a busy machine: go on at the lowest probe, and say so
        print(f"warning: no probe rate met {target} attainment ({probes}); is the machine busy? "
              "using the lowest probe rate", file=sys.stderr)
        best = fractions[0] * profile_capacity
    return best, probes
