"""Soak: N minutes (default 10) of Poisson load at 70 % of the measured sustainable rate
against a live server; resident memory of the router and every worker sampled throughout.

The sustainable rate is measured first, as in benchmarks/faults.py (highest Poisson probe
answered >= 95 % in time at the client, probes at fractions of workers x 16 / batch-16
p50 of the most accurate SubNet). The load runs as consecutive one-minute segments of one
seeded trace (so the client's own records stay small); RSS is sampled every
``--sample-s`` seconds by a thread. Start = the sample after the first segment (allocator
pools, connection buffers and caches have grown to their working size by then), end = the
last sample; growth % is reported per process and in total (target < 5 %), with the
sample series, attainment per segment and overall, and every request's accounting.

Usage: python -m benchmarks.soak [--bundle DIR] [--minutes 10] [--workers 2] [--load 0.7]
Writes benchmarks/results/soak.json.
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks._common import rel
from benchmarks._reliability import (RESULTS, ServerProcess, accounting, default_bundle, growth_pct,
                                     measure_sustainable, rss, run_trace)
from superserve.scheduling.conventions import default_slo_ms
from superserve.scheduling.profile import LatencyProfile
from superserve.workload import poisson


class RssSampler(threading.Thread):
    def __init__(self, srv: ServerProcess, every_s: float) -> None:
        super().__init__(daemon=True)
        self.srv, self.every_s = srv, every_s
        self.samples: list[dict[str, Any]] = []
        self._stop_event = threading.Event()
        self._t0 = time.monotonic()

    def sample(self) -> dict[str, Any]:
        s = {"t_s": round(time.monotonic() - self._t0, 1), **rss(self.srv).to_dict()}
        self.samples.append(s)
        return s

    def run(self) -> None:
        while not self._stop_event.wait(self.every_s):
            self.sample()

    def stop(self) -> None:
        self._stop_event.set()


def soak_experiment(bundle: str, *, minutes: float, workers: int, load: float, sample_s: float,
                    margin_ms: float = 0.0, log=print) -> dict[str, Any]:
    profile = LatencyProfile.load(Path(bundle) / "profile.json")
    slo = default_slo_ms(profile)
    profile_capacity = workers * profile.max_batch / (profile.largest.latency_ms(profile.max_batch, "p50") / 1000)
    segments = max(1, round(minutes))
    seg_s = minutes * 60.0 / segments
    with ServerProcess(bundle=bundle, workers=workers, warmup_runs=1) as srv:
        sustainable, probes = measure_sustainable(srv, profile_capacity, slo, margin_ms=margin_ms)
        rate = load * sustainable
        log(f"SLO {slo:.1f} ms; sustainable {sustainable:.0f} req/s (probes {probes}); soak at {rate:.0f} req/s "
            f"for {minutes:g} min ({segments} segments)")
        sampler = RssSampler(srv, sample_s)
        at_boot = sampler.sample()
        sampler.start()
        per_segment, sent, answered, in_time = [], 0, 0, 0.0
        start_sample = None
        for k in range(segments):
            rec, s = run_trace(srv, poisson(rate, seg_s, seed=100 + k), slo_ms=slo, margin_ms=margin_ms)
            acct = accounting(rec)
            sent += acct["requests_sent"]
            answered += acct["responses_received"]
            in_time += s["counts"]["in_time"]
            per_segment.append({"segment": k, "attainment": s["slo_attainment"], "requests": acct["requests_sent"],
                                "outcomes": s["counts"], "latency_ms": s["latency_ms"]})
            if k == 0:
                start_sample = sampler.sample()
            log(f"segment {k + 1}/{segments}: attainment {s['slo_attainment']}, rss {sampler.sample()}")
        sampler.stop()
        sampler.join()
        end_sample = sampler.sample()
        deaths = [e for e in srv.events() if e["event"] == "worker_died"]
    start_sample = start_sample or at_boot
    return {
        "config": {"bundle": rel(bundle), "workers": workers, "policy": "slackfit", "slo_ms": slo, "minutes": minutes,
                   "load_vs_sustainable": load, "margin_ms": margin_ms},
        "profile_capacity_rps": round(profile_capacity, 1),
        "sustainable_rps": round(sustainable, 1),
        "sustainable_probes": {str(k): v for k, v in probes.items()},
        "rate_rps": round(rate, 1),
        "requests_sent": sent,
        "responses_received": answered,
        "slo_attainment": round(in_time / sent, 6) if sent else None,
        "rss_at_boot": at_boot,
        "rss_start": start_sample,
        "rss_end": end_sample,
        "router_rss_growth_pct": growth_pct(start_sample["router_mb"], end_sample["router_mb"]),
        "workers_rss_growth_pct": [growth_pct(a, b) for a, b in zip(start_sample["workers_mb"],
                                                                   end_sample["workers_mb"])],
        "total_rss_growth_pct": growth_pct(start_sample["total_mb"], end_sample["total_mb"]),
        "worker_deaths": len(deaths),
        "segments": per_segment,
        "rss_samples": sampler.samples,
        "server_exit_code": srv.proc.returncode,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", default=default_bundle())
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--load", type=float, default=0.7)
    p.add_argument("--sample-s", type=float, default=15.0)
    p.add_argument("--margin-ms", type=float, default=0.0,
                   help="send slo_ms minus this to the server (room for the HTTP path); attainment still vs slo_ms")
    p.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    args = p.parse_args()
    res = soak_experiment(args.bundle, minutes=args.minutes, workers=args.workers, load=args.load,
                          sample_s=args.sample_s, margin_ms=args.margin_ms)
    res["command"] = (f"python -m benchmarks.soak --bundle {rel(args.bundle)} --minutes {args.minutes:g} "
                      f"--workers {args.workers} --load {args.load:g} --margin-ms {args.margin_ms:g}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(json.dumps({k: res[k] for k in ("rate_rps", "requests_sent", "responses_received", "slo_attainment",
                                          "rss_start", "rss_end", "router_rss_growth_pct", "workers_rss_growth_pct",
                                          "total_rss_growth_pct")}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
