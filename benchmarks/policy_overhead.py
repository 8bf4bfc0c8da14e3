"""Decision cost of every policy with a realistic queue, and simulator speed.

Targets (issue 4): slackfit_decision_us_p50 <= 10 us with thousands queued;
sim_requests_per_s >= 200,000.
"""
from __future__ import annotations

import random
import time

from benchmarks._common import capacity_qps, lineup, mid_index, parser, setup, slackfit_kw, write_json

from superserve.scheduling import EdfQueue, Request
from superserve.sim import simulate
from superserve.workload import bursty


def decision_times_us(policy, queue_len: int, samples: int = 20000, seed: int = 0) -> list[float]:
    rnd = random.Random(seed)
    q = EdfQueue()
    slo = 0.05
    for i in range(queue_len):
        a = rnd.uniform(0, 0.05)
        q.push(Request(i, a, a + slo))
    out = []
    clock = time.perf_counter_ns
    for _ in range(samples):
        now = rnd.uniform(0.0, 0.06)
        t0 = clock()
        policy.decide(q, now)
        out.append((clock() - t0) / 1000.0)
    out.sort()
    return out


def main() -> None:
    args = parser(__doc__).parse_args()
    profile, which, slo = setup(args)
    rows = []
    for qlen in (16, 1000, 5000):
        for name, pol in lineup(profile, args.workers, slackfit_kw(args))[:6]:
            ts = decision_times_us(pol, qlen)
            rows.append({"policy": name, "queue_len": qlen, "p50_us": ts[len(ts) // 2],
                         "p99_us": ts[int(len(ts) * 0.99)]})
            print(f"{name:>22} queue {qlen:>5}: p50 {rows[-1]['p50_us']:.2f} us  p99 {rows[-1]['p99_us']:.2f} us")
    sf5000 = next(r for r in rows if r["policy"] == "SlackFit" and r["queue_len"] == 5000)
    # Queue push + pop per request (the router's other per-request cost).
    q = EdfQueue()
    n = 200000
    reqs = [Request(i, 0.0, random.random()) for i in range(n)]
    t0 = time.perf_counter()
    for r in reqs:
        q.push(r)
    while q:
        q.pop_earliest(16)
    queue_us = (time.perf_counter() - t0) / n * 1e6
    print(f"EDF queue push + pop (batches of 16), 200k requests: {queue_us:.3f} us/request")
    # Simulator speed: SlackFit on a bursty trace near the mid SubNet's capacity.
    cap = capacity_qps(profile, mid_index(profile), args.workers)
    tr = bursty(0.3 * cap, 0.7 * cap, 4, args.duration or 20.0, seed=1)
    speeds = []
    for name, pol in lineup(profile, args.workers, slackfit_kw(args))[:3]:
        best = 0.0
        for _ in range(3):
            r = simulate(tr, profile, pol, num_workers=args.workers, slo_ms=slo)
            best = max(best, r.sim_requests_per_s)
        speeds.append({"policy": name, "requests": len(tr), "sim_requests_per_s": best})
        print(f"simulator, {name}: {len(tr)} requests, {best:,.0f} simulated requests/s (best of 3)")
    sim_speed = next(s["sim_requests_per_s"] for s in speeds if s["policy"] == "SlackFit")
    write_json("policy_overhead", {
        "profile": which, "slo_ms": slo, "workers": args.workers,
        "slackfit_decision_us_p50": sf5000["p50_us"], "slackfit_decision_us_p99": sf5000["p99_us"],
        "slackfit_decision_queue_len": 5000, "decision_times": rows,
        "edf_push_pop_us_per_request": queue_us,
        "sim_requests_per_s": sim_speed, "sim_speed": speeds,
        "targets": {"slackfit_decision_us_p50": 10.0, "sim_requests_per_s": 200000},
        "pass": sf5000["p50_us"] <= 10.0 and sim_speed >= 200000,
    })


if __name__ == "__main__":
    main()
