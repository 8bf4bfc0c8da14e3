"""The paper's own experiment, side by side (issue 18): SuperServe's headline figures in its
setting, simulated, with the paper's published value next to ours.

The setting is :func:`superserve.profiling.paper_setting.paper_profile`: OFA ResNet-50 SubNets,
accuracies from OFA's published ResNet-50 points, and latencies from a GPU model fitted to
the paper's published throughput (8 GPUs: about 2,000 req/s with the most accurate SubNet,
8,000 with the fastest, batch 16). **No GPU was lent: every latency here is modelled.** The
workloads are the paper's at the paper's loads, on the simulator (p50 latencies, shedding on):

* Azure Functions: the bundled 2019 sample's per-minute totals, one minute compressed to
  83 ms (the paper's 24 h in 120 s), mean 6,400 req/s, Poisson within a minute, SLO 36 ms;
  ``--seeds`` seeds. Every served SubNet also runs as a fixed Clipper+ version: the gains
  are measured against that interpolated fixed line (benchmarks/grid.py's helpers). The
  sample is a format sample, nearly flat minute to minute (peak/mean 1.02 per minute against
  the paper's 1.37), so this trace is milder than the paper's. Supplementary, not a
  headline: the same trace at 0.25 / 0.5 / 0.75 of that load.
* Bursty: a constant 1,500 req/s base stream plus a Gamma stream of 2,950 / 4,900 / 5,550
  req/s at CV^2 2 / 4 / 8 (mean 4,450-7,050 req/s).
* Time-varying: 2,500 req/s ramping to 4,800 / 6,800 / 7,800 at tau 250 / 500 / 5,000 q/s^2,
  CV^2 8, held 2 s before and 5 s after the ramp.
* Worker kills: one of 8 workers killed every 12 s from t = 12 s until 4 remain (8 -> 4 in
  60 s), bursty load of 2,800 req/s (1,500 base + 1,300 Gamma at CV^2 8: 70 % of what 4
  workers serve with the fastest SubNet).
* Scaling: for 1-48 workers, the highest rate at which SlackFit keeps 0.999 attainment
  (bisection on a bursty trace whose mean is split 30 % base / 70 % Gamma at CV^2 4), beside
  the paper's rule and the fastest SubNet alone (INFaaS).

Seeds: ``--seeds`` for the Azure trace, ``--cell-seeds`` for every bursty and time-varying
cell and the kill run; headlines take the median (gains) or the worst (attainments).
"SlackFit" is the library default; "SlackFit-paper" is the paper's rule as stated (head
slack only, a partial batch runs on its bucket's SubNet).

Why a figure falls short is measured, not argued: a fluid bound (every request served, no
queueing: the most accurate SubNet mix whose throughput within the SLO covers each minute's
rate) caps the accuracy any policy can reach on the Azure trace.

    python -m benchmarks.paper            # about 6 CPU-minutes; 8-9 minutes on 2 shared cores
    python -m benchmarks.paper --quick    # shorter traces, one seed, for development
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from benchmarks._common import RESULTS, plot_grid, write_json
from benchmarks.grid import accuracy_on_line, attainment_on_line, fixed_front
from superserve import workload
from superserve.profiling.paper_setting import OFA_RESNET50_PUBLISHED, paper_profile
from superserve.scheduling import INFaaS, ClipperPlus, MaxAcc, MaxBatch, Policy, SlackFit, SlackFitPaper
from superserve.scheduling.conventions import spanning_subnets
from superserve.scheduling.profile import LatencyProfile
from superserve.sim import simulate

SERVED = 24
WORKERS = 8
SLO_MS = 36.0
AZURE_MEAN = 6400.0
AZURE_MINUTE_S = 120.0 / 1440.0
BURSTY_BASE = 1500.0
BURSTY_VARIANTS = (2950.0, 4900.0, 5550.0)
BURSTY_CV2S = (2.0, 4.0, 8.0)
TV_START = 2500.0
TV_TARGETS = (4800.0, 6800.0, 7800.0)
TV_TAUS = (250.0, 500.0, 5000.0)
TV_CV2 = 8.0
KILL_EVERY_S = 12.0
KILL_BASE, KILL_VARIANT, KILL_CV2 = 1500.0, 1300.0, 8.0
SCALE_WORKERS = (1, 2, 4, 8, 16, 32, 48)
SCALE_TARGET = 0.999
SWEEP_LOADS = (0.25, 0.5, 0.75)
# Not a headline: our SlackFit with batches capped at half the SLO, to measure why the default
# falls short here (its default, the whole SLO, was chosen on the CPU profile, whose SLO is 2x the
# largest batch; here the 36-ms SLO is 0.56x the most accurate SubNet's batch of 16).
HALF = "SlackFit(batch_share=0.5)"

# The paper's published values (SuperServe, NSDI 2025), each stated so that higher is better.
PAPER_SPAN_PTS = 6.3  # the accuracy span its served SubNets cover (about 74-80 %)
PAPER = {
    "azure_accuracy_gain_at_equal_attainment_pts": 4.67,
    "azure_accuracy_gain_fraction_of_span": round(4.67 / PAPER_SPAN_PTS, 4),
    "azure_attainment_gain_at_equal_accuracy_x": 2.85,
    "azure_attainment": 0.99999,
    "bursty_min_attainment": 0.999,
    "timevarying_min_attainment": 0.999,
    "kill_attainment": 0.999,
    "scaling_max_qps": 33000.0,
    "scaling_linearity": 1.0,
}


@functools.lru_cache(maxsize=1)
def profile() -> LatencyProfile:
    return paper_profile(SERVED)


def paper_rule(p: LatencyProfile) -> SlackFitPaper:
    """SlackFit as the paper states it: head-slack buckets (the library's bucket count; the
    paper leaves it open) and a partial batch runs on the bucket's SubNet."""
    return SlackFitPaper(p, partial="paper")


def policies(p: LatencyProfile, workers: int, fixed: str) -> list[tuple[str, Policy]]:
    """The dynamic policies plus fixed Clipper+ versions: ``fixed`` = "all" (every served
    SubNet: the interpolated line), "six" (the paper's six spanning the accuracy range),
    "ends" (fastest and mid) or "none"."""
    pols: list[tuple[str, Policy]] = [("SlackFit", SlackFit(p, num_workers=workers)),
                                      ("SlackFit-paper", paper_rule(p)), ("MaxBatch", MaxBatch(p)),
                                      ("MaxAcc", MaxAcc(p)), ("INFaaS", INFaaS(p)),
                                      (HALF, SlackFit(p, num_workers=workers, batch_share=0.5))]
    ids = {"all": [s.id for s in p.subnets], "six": spanning_subnets(p, 6),
           "ends": [p.smallest.id, p.subnets[len(p) // 2].id], "none": []}[fixed]
    return pols + [(f"Clipper+({i})", ClipperPlus(p, i)) for i in ids]


def row(name: str, r: Any) -> dict[str, Any]:
    return {"policy": name, "slo_attainment": r.slo_attainment, "mean_accuracy": r.mean_accuracy,
            "mean_batch_size": float(r.batch_size_log.mean()) if r.batch_size_log.size else 0.0,
            "shed": r.count(2), "late": r.count(1), "requests": r.num_requests}


def line_gains(rows: list[dict], who: str) -> dict[str, float | None]:
    """``who``'s accuracy gain over the interpolated fixed line at its attainment (points) and
    its attainment ratio over the line at its accuracy."""
    me = next(r for r in rows if r["policy"] == who)
    front = fixed_front([r for r in rows if r["policy"].startswith("Clipper+")])
    acc = accuracy_on_line(front, me["slo_attainment"])
    att = attainment_on_line(front, 100 * me["mean_accuracy"])
    return {"accuracy_gain_pts": None if acc is None else 100 * me["mean_accuracy"] - acc,
            "attainment_ratio": None if not att else me["slo_attainment"] / att,
            "line_accuracy_pts": acc, "line_attainment": att}


# --- traces ----------------------------------------------------------------------------------
def azure_trace(seed: int, quick: bool, load: float = 1.0) -> workload.Trace:
    minutes = workload.azure_functions_minute_counts(workload.bundled_trace_path("azure_functions_2019_sample"))
    nz = np.nonzero(minutes)[0]
    span = int(nz[-1] - nz[0] + 1)
    dur = span * AZURE_MINUTE_S * (0.5 if quick else 1.0)
    return workload.azure_functions_sample(duration_s=dur, mean_rate=load * AZURE_MEAN, seed=seed)


def fluid_accuracy_bound(p: LatencyProfile, rate: float, workers: int, slo_ms: float) -> float | None:
    """The highest mean accuracy of a SubNet mix that serves ``rate`` req/s on ``workers``
    workers, each SubNet at its best throughput among batches that fit the SLO, with no
    queueing (an upper bound for any policy that serves every request); None if even the
    fastest mix cannot keep up."""
    cost, acc = [], []
    for s in p.subnets:
        thr = max((b / (lat / 1000.0) for b, lat in enumerate(s.latency_p50_ms, 1) if lat <= slo_ms), default=0.0)
        if thr > 0:
            cost.append(rate / (workers * thr))  # share of the fleet's time per request served by s
            acc.append(s.accuracy)
    best = max((a for c, a in zip(cost, acc) if c <= 1.0), default=None)
    for ci, ai in zip(cost, acc):  # mixes of two SubNets that use the whole fleet
        for cj, aj in zip(cost, acc):
            if ci < 1.0 < cj:
                f = (cj - 1.0) / (cj - ci)
                best = max(best or 0.0, f * ai + (1 - f) * aj)
    return best


def azure_bound(p: LatencyProfile, tr: workload.Trace) -> dict[str, Any]:
    """The fluid bound per compressed minute, weighted by the requests in it."""
    minute = tr.meta["duration_s"] / tr.meta["minutes"]
    counts = np.histogram(tr.arrivals, bins=np.arange(tr.meta["minutes"] + 1) * minute)[0]
    bounds = [fluid_accuracy_bound(p, c / minute, WORKERS, SLO_MS) for c in counts]
    ok = [(c, b) for c, b in zip(counts, bounds) if b is not None and c > 0]
    served = sum(c for c, _ in ok)
    return {"accuracy_bound_pts": 100 * sum(c * b for c, b in ok) / max(served, 1),
            "share_of_requests_in_minutes_the_fleet_can_keep_up_with": served / max(int(counts.sum()), 1)}


# --- one job per simulation batch ----------------------------------------------------------------
def job(spec: dict) -> dict:
    p = profile()
    kind = spec["kind"]
    if kind in ("azure", "azure_sweep"):
        tr = azure_trace(spec["seed"], spec["quick"], spec["load"])
        rows = [row(n, simulate(tr, p, pol, num_workers=WORKERS, slo_ms=SLO_MS))
                for n, pol in policies(p, WORKERS, "all")]
        bound = azure_bound(p, tr)
        gains = {w: line_gains(rows, w) for w in ("SlackFit", "SlackFit-paper", HALF)}
        for g in gains.values():  # the most any policy could gain over the line at that attainment
            g["fluid_headroom_pts"] = (None if g["line_accuracy_pts"] is None
                                       else bound["accuracy_bound_pts"] - g["line_accuracy_pts"])
        return {**spec, "trace": tr.summary(), "rows": rows, "bound": bound, "gains": gains}
    if kind in ("bursty", "timevarying"):
        if kind == "bursty":
            tr = workload.bursty(BURSTY_BASE, spec["variant"], spec["cv2"], spec["duration_s"], seed=spec["seed"])
        else:
            tr = workload.time_varying(TV_START, spec["target"], spec["tau"], TV_CV2, hold_start_s=2.0,
                                       hold_end_s=5.0 * spec["hold_scale"], seed=spec["seed"])
        rows = [row(n, simulate(tr, p, pol, num_workers=WORKERS, slo_ms=SLO_MS))
                for n, pol in policies(p, WORKERS, "six")]
        return {**spec, "trace": tr.summary(), "rows": rows,
                "gains": {w: line_gains(rows, w) for w in ("SlackFit", "SlackFit-paper", HALF)}}
    if kind == "kill":
        tr = workload.bursty(KILL_BASE, KILL_VARIANT, KILL_CV2, spec["duration_s"], seed=spec["seed"])
        kills = [(KILL_EVERY_S * (k + 1), WORKERS - 1 - k) for k in range(WORKERS // 2)]
        out, series = [], {}
        for n, pol in policies(p, WORKERS, "ends"):
            r = simulate(tr, p, pol, num_workers=WORKERS, slo_ms=SLO_MS, failures=kills)
            ts = r.time_series(1.0)
            series[n] = {k: ts[k] for k in ("t", "slo_attainment", "accuracy", "rate")}
            out.append({**row(n, r), "min_1s_attainment": float(np.nanmin(ts["slo_attainment"]))})
        return {**spec, "kills": kills, "trace": tr.summary(), "rows": out, "series": series}
    if kind == "scale":
        return {**spec, **max_rate(p, spec["workers"], spec["policy"], spec["duration_s"], spec["seed"])}
    raise ValueError(kind)


def max_rate(p: LatencyProfile, workers: int, who: str, duration_s: float, seed: int) -> dict[str, Any]:
    """Bisection for the highest mean rate at which ``who`` keeps SCALE_TARGET attainment."""
    fast = p.smallest
    cap = workers * p.max_batch / (fast.latency_p50_ms[-1] / 1000.0)
    lo, hi = 0.0, 1.2 * cap
    probes: list[tuple[float, float]] = []

    def attains(rate: float) -> bool:
        tr = workload.bursty(0.3 * rate, 0.7 * rate, 4.0, duration_s, seed=seed)
        pol = {"SlackFit": lambda: SlackFit(p, num_workers=workers), "SlackFit-paper": lambda: paper_rule(p),
               "INFaaS": lambda: INFaaS(p), HALF: lambda: SlackFit(p, num_workers=workers, batch_share=0.5)}[who]()
        a = simulate(tr, p, pol, num_workers=workers, slo_ms=SLO_MS).slo_attainment
        probes.append((rate, a))
        return a >= SCALE_TARGET

    for _ in range(8):  # 0.5 % of the fastest SubNet's capacity
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if attains(mid) else (lo, mid)
    return {"max_qps": lo, "probes": probes, "fastest_capacity_qps": cap}


def specs(quick: bool, seeds: int, cell_seeds: int) -> list[dict]:
    out: list[dict] = [{"kind": "azure", "seed": s, "quick": quick, "load": 1.0} for s in range(seeds)]
    # Supplementary, not a headline: the same trace at lower loads, where the load leaves room.
    out += [{"kind": "azure_sweep", "seed": 0, "quick": quick, "load": x} for x in SWEEP_LOADS]
    for k in range(cell_seeds):
        for v in BURSTY_VARIANTS:
            for c in BURSTY_CV2S:
                out.append({"kind": "bursty", "variant": v, "cv2": c, "duration_s": 5.0 if quick else 10.0,
                            "seed": int(v) + int(c) + 1000 * k, "rep": k})
        for tgt in TV_TARGETS:
            for tau in TV_TAUS:
                out.append({"kind": "timevarying", "target": tgt, "tau": tau, "hold_scale": 0.4 if quick else 1.0,
                            "seed": int(tgt) + int(tau) + 100_000 * k, "rep": k})
        out.append({"kind": "kill", "duration_s": KILL_EVERY_S * (WORKERS // 2 + 1), "seed": 7 + k, "rep": k})
    for w in SCALE_WORKERS[:4] if quick else SCALE_WORKERS:
        for who in ("SlackFit", "SlackFit-paper", "INFaaS", HALF):  # INFaaS: the fastest SubNet alone
            dur = min(max(60.0 / w, 2.0), 30.0) / (2 if quick else 1)  # long enough for bursts to recur
            out.append({"kind": "scale", "workers": w, "policy": who, "duration_s": dur, "seed": w})
    # Longest first, so two processes finish together.
    weight = {"azure": 6, "azure_sweep": 6, "timevarying": 4, "kill": 5, "bursty": 2, "scale": 1}
    return sorted(out, key=lambda s: -weight[s["kind"]] * (s.get("workers", 1) ** 0.5))


# --- headlines -----------------------------------------------------------------------------------
def _median(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.median(xs)) if xs else None


def _att(res: list[dict], who: str) -> list[float]:
    return [next(r for r in j["rows"] if r["policy"] == who)["slo_attainment"] for j in res]


def headlines(res: dict[str, list[dict]], span_pts: float) -> dict[str, dict[str, Any]]:
    az = res["azure"]
    h: dict[str, dict[str, Any]] = {}

    def put(name: str, ours: float | None, paper_rule: float | None, **extra: Any) -> None:
        h[name] = {"paper": PAPER[name], "ours": ours, "ours_paper_rule": paper_rule, **extra}

    gain = {w: [j["gains"][w]["accuracy_gain_pts"] for j in az] for w in ("SlackFit", "SlackFit-paper", HALF)}
    ratio = {w: [j["gains"][w]["attainment_ratio"] for j in az] for w in ("SlackFit", "SlackFit-paper", HALF)}
    put("azure_accuracy_gain_at_equal_attainment_pts", _median(gain["SlackFit"]), _median(gain["SlackFit-paper"]),
        per_seed=gain["SlackFit"], per_seed_paper_rule=gain["SlackFit-paper"],
        ours_batch_share_half=_median(gain[HALF]),
        fluid_headroom_pts=_median([j["gains"]["SlackFit"]["fluid_headroom_pts"] for j in az]),
        against="the interpolated line of every served SubNet run as a fixed Clipper+ version")
    frac = {w: _median([None if g is None else g / span_pts for g in gain[w]]) for w in gain}
    put("azure_accuracy_gain_fraction_of_span", frac["SlackFit"], frac["SlackFit-paper"],
        span_pts={"paper": PAPER_SPAN_PTS, "ours": span_pts})
    put("azure_attainment_gain_at_equal_accuracy_x", _median(ratio["SlackFit"]), _median(ratio["SlackFit-paper"]),
        per_seed=ratio["SlackFit"], per_seed_paper_rule=ratio["SlackFit-paper"],
        ours_batch_share_half=_median(ratio[HALF]),
        ceiling=_median([1 / j["gains"]["SlackFit"]["line_attainment"] for j in az
                         if j["gains"]["SlackFit"]["line_attainment"]]),
        ceiling_rule="1 / the fixed line's attainment at SlackFit's accuracy (what a perfect 1.0 would give)")
    put("azure_attainment", min(_att(az, "SlackFit")), min(_att(az, "SlackFit-paper")), rule="worst seed",
        ours_batch_share_half=min(_att(az, HALF)))
    for kind, name in (("bursty", "bursty_min_attainment"), ("timevarying", "timevarying_min_attainment")):
        put(name, min(_att(res[kind], "SlackFit")), min(_att(res[kind], "SlackFit-paper")),
            cells=len(res[kind]), rule="worst cell", fastest_subnet_alone=min(_att(res[kind], "INFaaS")),
            ours_batch_share_half=min(_att(res[kind], HALF)),
            accuracy_gain_vs_six_clipper_line_pts_median=_median(
                [j["gains"]["SlackFit"]["accuracy_gain_pts"] for j in res[kind]]))
    kills = [{r["policy"]: r for r in j["rows"]} for j in res["kill"]]

    def worst(who: str, key: str) -> float:
        return min(k[who][key] for k in kills)
    put("kill_attainment", worst("SlackFit", "slo_attainment"), worst("SlackFit-paper", "slo_attainment"),
        rule="worst seed", seeds=len(kills), fastest_subnet_alone=worst("INFaaS", "slo_attainment"),
        ours_batch_share_half=worst(HALF, "slo_attainment"),
        min_1s_bin={"ours": worst("SlackFit", "min_1s_attainment"),
                    "ours_paper_rule": worst("SlackFit-paper", "min_1s_attainment")})
    sc = {w: {j["workers"]: j["max_qps"] for j in res["scale"] if j["policy"] == w}
          for w in ("SlackFit", "SlackFit-paper", "INFaaS", HALF)}
    top = {w: max(sc[w]) for w in sc}
    put("scaling_max_qps", sc["SlackFit"][top["SlackFit"]], sc["SlackFit-paper"][top["SlackFit-paper"]],
        workers={"ours": top["SlackFit"], "paper": "the worker count behind the paper's 33,000 req/s is not in our notes"})
    per = {w: {n: q / n for n, q in sc[w].items()} for w in sc}
    def linearity(rates: dict[int, float], base: int) -> float | None:
        """min over W >= base of the per-worker rate at W over the one at base: 1 = linear from base."""
        return min(q for n, q in rates.items() if n >= base) / rates[base] if rates.get(base) else None
    lin = {w: linearity(per[w], WORKERS) for w in sc}
    put("scaling_linearity", lin["SlackFit"], lin["SlackFit-paper"],
        rule="scaling out from the paper's 8 workers: min over W >= 8 of (max_qps(W) / W) / (max_qps(8) / 8); "
             ">= 1 = at least linear",
        one_worker_per_worker_rate_over_eight={w: per[w][1] / per[w][WORKERS] for w in sc
                                               if per[w].get(1) and per[w].get(WORKERS)},
        fastest_subnet_alone=lin["INFaaS"], ours_batch_share_half=lin[HALF],
        qps_per_worker={"ours": per["SlackFit"], "ours_paper_rule": per["SlackFit-paper"],
                        "fastest_subnet_alone": per["INFaaS"], "ours_batch_share_half": per[HALF]})
    for v in h.values():
        o, pp = v["ours"], v["paper"]
        v["ours_reaches_paper"] = None if o is None else bool(o >= pp - 1e-12)
    return h


# --- figures -------------------------------------------------------------------------------------
def figures(res: dict[str, list[dict]], p: LatencyProfile) -> None:
    plot_grid("paper_azure", [(f"Azure Functions, 6,400 req/s, seed {j['seed']}", j["rows"]) for j in res["azure"]],
              ncols=len(res["azure"]), suptitle="Paper setting (modelled GPU latencies): Azure Functions trace, "
                                                 "8 workers, SLO 36 ms; grey = every SubNet as fixed Clipper+")
    plot_grid("paper_azure_sweep", [(f"Azure Functions at {j['load']:g} x 6,400 req/s", j["rows"])
                                    for j in res["azure_sweep"] + res["azure"][:1]], ncols=len(SWEEP_LOADS) + 1,
              suptitle="Supplementary: the Azure trace at lower loads (seed 0), same setting")
    first = {k: [j for j in res[k] if j["rep"] == 0] for k in ("bursty", "timevarying")}
    plot_grid("paper_bursty", [(f"lambda_v={j['variant']:.0f}, CV^2={j['cv2']:g}", j["rows"]) for j in first["bursty"]],
              suptitle="Paper setting: bursty traces (base 1,500 req/s + Gamma), 8 workers, SLO 36 ms")
    plot_grid("paper_timevarying", [(f"2500->{j['target']:.0f}, tau={j['tau']:g}", j["rows"]) for j in first["timevarying"]],
              suptitle="Paper setting: time-varying traces, CV^2 8, 8 workers, SLO 36 ms")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    kill = res["kill"][0]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    acc = {r["policy"]: r["mean_accuracy"] for r in kill["rows"]}
    for n, ts in kill["series"].items():
        label = f"Clipper+ ({100 * acc[n]:.1f} %)" if n.startswith("Clipper+") else n
        a1.plot(ts["t"], ts["slo_attainment"], label=label)
        a2.plot(ts["t"], [100 * v for v in ts["accuracy"]], label=label)
    for t, _ in kill["kills"]:
        for ax in (a1, a2):
            ax.axvline(t, color="tab:red", ls=":", lw=1)
    a1.set_ylabel("SLO attainment (1 s bins)")
    a2.set_ylabel("serving accuracy (%)")
    a2.set_xlabel("time (s); dotted: a worker is killed (8 -> 4)")
    a1.legend(fontsize=7)
    fig.suptitle(f"Paper setting: worker kills, 2,800 req/s bursty, SLO 36 ms (seed {kill['seed']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(RESULTS / "paper_kill.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for w, m in (("SlackFit", "r*-"), ("SlackFit-paper", "P--"), ("INFaaS", "D:")):
        pts = sorted((j["workers"], j["max_qps"]) for j in res["scale"] if j["policy"] == w)
        ax.plot([x for x, _ in pts], [y for _, y in pts], m, label="INFaaS (fastest SubNet)" if w == "INFaaS" else w)
    ws = sorted({j["workers"] for j in res["scale"]})
    cap = p.max_batch / (p.smallest.latency_p50_ms[-1] / 1000.0)
    ax.plot(ws, [w * cap for w in ws], "k:", label="fastest SubNet's capacity")
    ax.axhline(PAPER["scaling_max_qps"], color="tab:gray", ls="--", lw=1, label="paper: ~33,000 req/s")
    ax.set_xlabel("workers (simulated)")
    ax.set_ylabel(f"max req/s at {SCALE_TARGET} attainment")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / "paper_scaling.png", dpi=110)
    plt.close(fig)
    print(f"wrote {RESULTS / 'paper_kill.png'} and {RESULTS / 'paper_scaling.png'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter traces and fewer worker counts")
    ap.add_argument("--seeds", type=int, default=3, help="Azure trace seeds")
    ap.add_argument("--cell-seeds", type=int, default=2, help="seeds per bursty / time-varying cell and kill run")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", default="paper")
    args = ap.parse_args()
    p = profile()
    span = 100 * (p.largest.accuracy - p.subnets[0].accuracy)
    print(f"profile: {p.device}; {len(p)} OFA ResNet-50 SubNets, {100 * p.subnets[0].accuracy:.2f}-"
          f"{100 * p.largest.accuracy:.2f} % ({span:.2f} points)\n  LATENCIES ARE MODELLED, NOT MEASURED: "
          f"{p.meta['latency_model']}; constants {p.meta['latency_constants']}\n  accuracy: {p.meta['accuracy_rule']} "
          f"({p.meta['accuracy_source']})")
    t0 = time.perf_counter()
    res: dict[str, list[dict]] = {k: [] for k in ("azure", "azure_sweep", "bursty", "timevarying", "kill", "scale")}
    with ProcessPoolExecutor(args.jobs) as ex:
        for j in ex.map(job, specs(args.quick, args.seeds, args.cell_seeds)):
            res[j["kind"]].append(j)
    wall = time.perf_counter() - t0
    for k in ("bursty", "timevarying"):
        res[k].sort(key=lambda j: (j["rep"], j.get("variant", j.get("target")), j.get("cv2", j.get("tau"))))
    res["kill"].sort(key=lambda j: j["seed"])
    res["azure"].sort(key=lambda j: j["seed"])
    res["azure_sweep"].sort(key=lambda j: j["load"])
    h = headlines(res, span)
    print(f"\n{'headline':46s} {'paper':>10s} {'ours':>10s} {'paper rule':>10s}")
    for name, v in h.items():
        f = lambda x: "-" if x is None else f"{x:.5g}"  # noqa: E731
        print(f"{name:46s} {f(v['paper']):>10s} {f(v['ours']):>10s} {f(v['ours_paper_rule']):>10s}"
              f"{'' if v['ours_reaches_paper'] else '   (short of the paper)'}")
    for j in res["azure"] + res["azure_sweep"]:
        sf = next(r for r in j["rows"] if r["policy"] == "SlackFit")
        print(f"azure load {j['load']:g} seed {j['seed']}: SlackFit {sf['slo_attainment']:.5f} at {100 * sf['mean_accuracy']:.2f} %; "
              f"line {j['gains']['SlackFit']}; fluid bound {j['bound']}")
    write_json(args.out, {
        "headlines": h,
        "setting": {"profile_device": p.device, "profile_meta": p.meta, "served_subnets": len(p),
                    "accuracy_span_pts": span, "published_points": OFA_RESNET50_PUBLISHED, "workers": WORKERS,
                    "slo_ms": SLO_MS, "latency": "p50 (deterministic)", "quick": args.quick, "wall_s": wall},
        "subnets": [{"id": s.id, "gmacs": s.config["gmacs"], "accuracy": s.accuracy,
                     "p50_b1_ms": s.latency_p50_ms[0], "p50_b16_ms": s.latency_p50_ms[-1]} for s in p.subnets],
        "azure": res["azure"], "azure_sweep": res["azure_sweep"], "bursty": res["bursty"], "timevarying": res["timevarying"],
        "kill": [{k: v for k, v in j.items() if k != "series"} for j in res["kill"]], "scaling": res["scale"],
    })
    figures(res, p)
    print(f"({wall:.0f} s of simulation)")


if __name__ == "__main__":
    main()
