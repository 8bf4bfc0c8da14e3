"""Overload: 10x the sustainable rate against a live server; every request answered, none
lost, the router's own latency flat, memory back near its baseline afterwards.

Configuration (stated in the JSON): 1 worker, Clipper+ on the bundle's most accurate SubNet
with batches of at most ``--max-batch`` (default 1), deadline shedding on, queue of
``--queue-capacity``. Batch 1 keeps the capacity low enough that 10x of it is within what
the Python client can send on a small machine; the phases are:

1. calibration: 2 s Poisson probes at 5, 10, 20, 35, 50, 70 % of the profile's capacity; the
   *sustainable rate* is the highest probe answered >= 95 % in time at the client (router,
   HTTP, IPC and the client on the same cores included, so it is below the profile's figure);
2. light: 3 s at 0.5x sustainable: the reference latency;
3. overload: ``--seconds`` (default 20) at ``--factor`` (default 10) x sustainable, Poisson,
   sent by ``--processes`` client processes (capped at ``--max-rate``; the achieved factor
   is reported);
4. after: 3 s idle, RSS again; the overload is repeated (``--repeats``, default 2) to tell a
   one-time allocator high-water mark from a leak; then 3 s light load (the server serves
   normally again).

Figures: requests sent == responses received (in time, late, shed 503/504, 429, each
counted), the latency of the router's fast answers (429/503/504: they never reach a worker)
measured from the actual send (client send lag removed), the served requests' queue time,
router and worker RSS before and after.

Usage: python -m benchmarks.overload [--bundle DIR] [--seconds 20] [--factor 10]
Writes benchmarks/results/overload.json.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import rel
from benchmarks._reliability import (RESULTS, ServerProcess, accounting, default_bundle, growth_pct,
                                     measure_sustainable, pcts, rss, run_trace, single_subnet_profile)
from superserve.loadgen.records import IN_TIME, LATE, OVERLOADED, SHED
from superserve.workload import poisson


def fast_answer_ms(rec) -> np.ndarray:
    """Client latency of answers the router gave without a worker (429, shed 503/504), from
    the moment the request was actually sent."""
    sel = (rec.outcome == OVERLOADED) | (rec.outcome == SHED)
    return (rec.latency_s[sel] - rec.lag_s[sel]) * 1000.0


def served_ms(rec) -> np.ndarray:
    sel = (rec.outcome == IN_TIME) | (rec.outcome == LATE)
    return (rec.latency_s[sel] - rec.lag_s[sel]) * 1000.0


def overload_experiment(bundle: str, *, seconds: float = 20.0, factor: float = 10.0, max_rate: float = 5000.0,
                        processes: int = 2, max_batch: int = 1, queue_capacity: int = 256,
                        slo_ms: float | None = None, margin_ms: float = 0.0, repeats: int = 1,
                        log=print) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path, subnet, profile = single_subnet_profile(bundle, Path(tmp) / "profile.json", max_batch=max_batch)
        p50 = profile.largest.latency_ms(max_batch, "p50")
        profile_capacity = 1000.0 * max_batch / p50
        slo = slo_ms if slo_ms is not None else max(20.0, 10.0 * profile.largest.latency_ms(max_batch, "p99"))
        with ServerProcess(bundle=bundle, profile=str(path), subnets=[subnet], policy="clipper+", subnet=subnet,
                           workers=1, queue_capacity=queue_capacity, late="shed", slo_ms=slo,
                           warmup_runs=1) as srv:
            sustainable, probes = measure_sustainable(srv, profile_capacity, slo, margin_ms=margin_ms)
            log(f"profile capacity {profile_capacity:.0f} req/s; measured sustainable {sustainable:.0f} req/s "
                f"(probes: {probes})")
            time.sleep(1.0)
            rss_before = rss(srv)
            light_rec, light = run_trace(srv, poisson(0.5 * sustainable, 3.0, seed=2), slo_ms=slo, margin_ms=margin_ms)
            rate = min(factor * sustainable, max_rate)
            log(f"overload: {rate:.0f} req/s for {seconds:g} s ({rate / sustainable:.1f}x sustainable) "
                f"from {processes} client processes")
            rss_after_each, accts = [], []
            for k in range(repeats):  # the same overload again: memory must plateau, not climb
                t0 = time.monotonic()
                rec, over = run_trace(srv, poisson(rate, seconds, seed=3 + k), slo_ms=slo, processes=processes,
                                      margin_ms=margin_ms)
                over_wall = time.monotonic() - t0
                accts.append(accounting(rec))
                time.sleep(3.0)
                rss_after_each.append(rss(srv))
                if k == 0:
                    first_rec, first = rec, over
            rss_after = rss_after_each[-1]
            rec, over = first_rec, first  # figures of the first overload; memory of all
            after_rec, after = run_trace(srv, poisson(0.5 * sustainable, 3.0, seed=4), slo_ms=slo, margin_ms=margin_ms)
            worker_pids_same = srv.worker_pids == srv.info["worker_pids"]
        exit_code = srv.proc.returncode
    # Every request of every overload: sent == answered.
    acct = {key: sum(a[key] for a in accts) for key in accts[0]}
    return {
        "config": {"bundle": rel(bundle), "subnet": subnet, "max_batch": max_batch, "workers": 1, "policy": "clipper+",
                   "late": "shed", "queue_capacity": queue_capacity, "slo_ms": slo, "client_processes": processes,
                   "margin_ms": margin_ms},
        "profile_capacity_rps": round(profile_capacity, 1),
        "sustainable_rps": round(sustainable, 1),
        "sustainable_probes": {str(k): v for k, v in probes.items()},
        "offered_rps": over["offered_rps"],
        "overload_factor": round(float(over["offered_rps"]) / sustainable, 2) if sustainable else None,
        "overload_seconds": seconds,
        "overloads": repeats,
        **acct,
        "outcomes": over["counts"],
        "server_outcomes": over["server_outcomes"],
        "goodput_rps": over["goodput_rps"],
        "send_lag_ms": over["send_lag_ms"],
        "router_fast_answer_ms": pcts(fast_answer_ms(rec)),
        "served_latency_ms": {"light_before": pcts(served_ms(light_rec)), "overload": pcts(served_ms(rec)),
                              "light_after": pcts(served_ms(after_rec))},
        "served_queue_ms_overload": pcts(rec.queue_ms[np.isfinite(rec.queue_ms)]),
        "attainment": {"light_before": light["slo_attainment"], "overload": over["slo_attainment"],
                       "light_after": after["slo_attainment"]},
        "rss_before": rss_before.to_dict(), "rss_after": rss_after.to_dict(),
        "rss_after_each_overload": [r.to_dict() for r in rss_after_each],
        "router_rss_growth_pct": growth_pct(rss_before.router_mb, rss_after.router_mb),
        "router_rss_growth_pct_first_overload": growth_pct(rss_before.router_mb, rss_after_each[0].router_mb),
        "router_rss_growth_pct_between_overloads": growth_pct(rss_after_each[0].router_mb, rss_after.router_mb),
        "total_rss_growth_pct": growth_pct(rss_before.total_mb, rss_after.total_mb),
        "worker_restarts": 0 if worker_pids_same else "some",
        "server_exit_code": exit_code,
        "overload_wall_s": round(over_wall, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", default=default_bundle())
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--factor", type=float, default=10.0)
    p.add_argument("--max-rate", type=float, default=5000.0, help="client ceiling (req/s)")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--max-batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2, help="overloads in a row (memory must plateau)")
    p.add_argument("--margin-ms", type=float, default=0.0,
                   help="send slo_ms minus this to the server (room for the HTTP path); attainment still vs slo_ms")
    p.add_argument("--out", type=Path, default=RESULTS / "overload.json")
    args = p.parse_args()
    res = overload_experiment(args.bundle, seconds=args.seconds, factor=args.factor, max_rate=args.max_rate,
                              processes=args.processes, max_batch=args.max_batch, margin_ms=args.margin_ms,
                              repeats=args.repeats)
    res["command"] = "python -m benchmarks.overload " + " ".join(
        f"--{k.replace('_', '-')} {rel(v) if k == 'bundle' else v}" for k, v in vars(args).items() if k not in ("out",))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(json.dumps({k: res[k] for k in ("sustainable_rps", "offered_rps", "overload_factor", "requests_sent",
                                          "responses_received", "outcomes", "router_fast_answer_ms", "goodput_rps",
                                          "router_rss_growth_pct", "router_rss_growth_pct_between_overloads",
                                          "total_rss_growth_pct")}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
