"""The headline grid: where policies differ (issue: "SlackFit that holds where it matters").

Cells: load 0.05-1.5 x C_small (C_small = the fastest SubNet's best throughput x workers) x SLO
1x / 1.5x / 2x (of the most accurate SubNet's latency at its best-throughput batch) x
burstiness (measured inter-arrival CV^2 about 1, 8, 50, 200: Poisson and on/off bursts) x 1 and
8 workers, plus the real traces (Azure LLM 2023, Azure Functions 2019 sample) time-compressed
to the same loads. In every cell: SlackFit, SlackFit-paper, MaxBatch, MaxAcc, INFaaS and every
served SubNet as a fixed Clipper+.

Per cell, ``slackfit_dominated`` says whether some other policy is at least as good on both
axes and better on one (attainment >= SlackFit's - 0.0005 and accuracy >= SlackFit's + 0.1
point, or attainment >= SlackFit's + 0.001 and accuracy >= SlackFit's). Gains are computed
against an *interpolated* fixed-SubNet line (the upper-right front of the fixed SubNets'
(attainment, accuracy) points, joined linearly), so no ratio hinges on one step.

    python -m benchmarks.grid            # the whole grid (about 45 min on 2 cores)
    python -m benchmarks.grid --quick    # a few cells, for development
    python -m benchmarks.grid --variant '{"reserve": 0}' --variant '{}'   # SlackFit variants vs grid.json
"""
from __future__ import annotations

import argparse
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np


from superserve.scheduling import INFaaS, ClipperPlus, MaxAcc, MaxBatch, Policy, SlackFit, SlackFitPaper
from superserve.scheduling.conventions import resolve_profile
from superserve.scheduling.profile import LatencyProfile
from superserve.sim import simulate
from superserve.workload import Trace, poisson

RESULTS = Path(__file__).resolve().parent / "results"
LOADS = (0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.75, 0.9, 1.05, 1.2, 1.5)
SLO_FACTORS = (1.0, 1.5, 2.0)
CV2S = (1, 8, 50, 200)
WORKERS = (1, 8)
REAL = ("azure_llm", "azure_functions")
DYNAMIC = ("SlackFit", "SlackFit-paper", "MaxBatch", "MaxAcc", "INFaaS")
ATT_TOL, ACC_TOL_PTS, ATT_BETTER = 0.0005, 0.1, 0.001


# --- definitions ------------------------------------------------------------------------------
def best_batch(latencies_ms: tuple[float, ...]) -> int:
    """The batch with the highest throughput (b / latency); ties: the larger."""
    return max(range(1, len(latencies_ms) + 1), key=lambda b: (b / latencies_ms[b - 1], b))


def c_small(profile: LatencyProfile, workers: int) -> float:
    """Requests/s the fastest SubNet serves at its best batch on ``workers`` workers."""
    fast = min(profile.subnets, key=lambda s: s.latency_p50_ms[0])
    b = best_batch(fast.latency_p50_ms)
    return workers * b / (fast.latency_p50_ms[b - 1] / 1000.0)


def slo_base_ms(profile: LatencyProfile) -> float:
    """The most accurate SubNet's latency at its best-throughput batch."""
    lat = profile.largest.latency_p50_ms
    return lat[best_batch(lat) - 1]


def is_dominated(me: dict, other: dict) -> bool:
    a0, c0 = me["slo_attainment"], 100 * me["mean_accuracy"]
    a, c = other["slo_attainment"], 100 * other["mean_accuracy"]
    if math.isnan(c0):
        return a >= a0 + ATT_BETTER
    if math.isnan(c):
        return False
    return (a >= a0 - ATT_TOL and c >= c0 + ACC_TOL_PTS) or (a >= a0 + ATT_BETTER and c >= c0)


def fixed_front(rows: list[dict]) -> list[tuple[float, float]]:
    """The fixed SubNets' upper-right front as (attainment ascending, accuracy % descending)."""
    pts = sorted(((r["slo_attainment"], 100 * r["mean_accuracy"]) for r in rows
                  if not math.isnan(r["mean_accuracy"])), key=lambda p: (-p[0], -p[1]))
    front, best = [], -1.0
    for a, c in pts:  # attainment descending: keep a point only if it is more accurate
        if c > best:
            front.append((a, c))
            best = c
    return front[::-1]


def accuracy_on_line(front: list[tuple[float, float]], att: float) -> float | None:
    """The fixed line's accuracy at attainment ``att`` (linear between front points; None
    above the best fixed attainment; the most accurate fixed SubNet below the front)."""
    if not front or att > front[-1][0] + 1e-12:
        return None
    if att <= front[0][0]:
        return front[0][1]
    for (a0, c0), (a1, c1) in zip(front, front[1:]):
        if a0 <= att <= a1:
            return c0 if a1 == a0 else c0 + (c1 - c0) * (att - a0) / (a1 - a0)
    return front[-1][1]


def attainment_on_line(front: list[tuple[float, float]], acc_pts: float) -> float | None:
    """The fixed line's attainment at accuracy ``acc_pts`` (None above the most accurate)."""
    if not front or acc_pts > front[0][1] + 1e-12:
        return None
    if acc_pts <= front[-1][1]:
        return front[-1][0]
    for (a0, c0), (a1, c1) in zip(front, front[1:]):
        if c1 <= acc_pts <= c0:
            return a0 if c0 == c1 else a0 + (a1 - a0) * (c0 - acc_pts) / (c0 - c1)
    return front[0][0]


# --- traces -------------------------------------------------------------------------------------
def make_trace(kind: str, cv2: float, rate: float, duration_s: float, seed: int) -> Trace:
    from superserve import workload
    if kind == "azure_llm":
        return workload.azure_llm(mean_rate=rate)  # the whole hour, gaps scaled
    if kind == "azure_functions":
        return workload.azure_functions_sample(duration_s=duration_s, mean_rate=rate, seed=seed)
    if cv2 <= 1:
        return poisson(rate, duration_s, seed=seed)
    onoff = getattr(workload, "onoff", None)
    if onoff is not None:
        return onoff(rate, cv2, duration_s, seed=seed)
    return workload.gamma(rate, cv2, duration_s, seed=seed)


# --- one cell ---------------------------------------------------------------------------------
def lineup(profile: LatencyProfile, workers: int, fixed: bool = True,
           slackfit_kw: dict | None = None) -> list[tuple[str, Policy]]:
    pols: list[tuple[str, Policy]] = [
        ("SlackFit", SlackFit(profile, num_workers=workers, **(slackfit_kw or {}))), ("SlackFit-paper", SlackFitPaper(profile)),
        ("MaxBatch", MaxBatch(profile)), ("MaxAcc", MaxAcc(profile)), ("INFaaS", INFaaS(profile))]
    if fixed:
        pols += [(f"fixed:{s.id}", ClipperPlus(profile, s.id)) for s in profile.subnets]
    return pols


def run_cell(spec: dict) -> dict:
    profile = LatencyProfile.load(spec["profile_path"])
    tr = make_trace(spec["trace"], spec["cv2"], spec["rate"], spec["duration_s"], spec["seed"])
    st = tr.summary(0.1)
    rows = {}
    for name, pol in lineup(profile, spec["workers"], spec.get("fixed", True), spec.get("slackfit_kw")):
        r = simulate(tr, profile, pol, num_workers=spec["workers"], slo_ms=spec["slo_ms"])
        rows[name] = {"slo_attainment": r.slo_attainment, "mean_accuracy": r.mean_accuracy}
    sf = rows["SlackFit"]
    fixed_rows = [v for k, v in rows.items() if k.startswith("fixed:")]
    dominators = [k for k, v in rows.items() if k != "SlackFit" and is_dominated(sf, v)]
    front = fixed_front(fixed_rows)
    acc_line = accuracy_on_line(front, sf["slo_attainment"])
    att_line = attainment_on_line(front, 100 * sf["mean_accuracy"])
    best_fixed = max(fixed_rows, key=lambda v: (v["slo_attainment"], v["mean_accuracy"])) if fixed_rows else None
    inf = rows["INFaaS"]
    return {
        "trace": spec["trace"], "workers": spec["workers"], "load": spec["load"], "slo_factor": spec["slo_factor"],
        "slo_ms": spec["slo_ms"], "cv2_asked": spec["cv2"], "cv2_measured": st["interarrival_cv2"],
        "peak_to_mean_100ms": st["peak_rate"] / max(st["mean_rate"], 1e-9), "requests": len(tr),
        "rate_qps": spec["rate"], "seed": spec["seed"],
        "policies": rows, "slackfit_dominated": bool(dominators), "dominated_by": dominators[:5],
        "fixed_reaches_999": any(v["slo_attainment"] >= 0.999 for v in fixed_rows),
        "slackfit_reaches_999": sf["slo_attainment"] >= 0.999,
        "best_fixed_attainment": best_fixed["slo_attainment"] if best_fixed else None,
        "accuracy_gain_vs_fixed_line_pts": None if acc_line is None else 100 * sf["mean_accuracy"] - acc_line,
        "attainment_gain_vs_fixed_line": None if att_line is None else sf["slo_attainment"] - att_line,
        "attainment_ratio_vs_fixed_line": None if not att_line else sf["slo_attainment"] / att_line,
        "accuracy_gain_vs_infaas_pts": 100 * (sf["mean_accuracy"] - inf["mean_accuracy"]),
        "attainment_gain_vs_infaas": sf["slo_attainment"] - inf["slo_attainment"],
    }


def cell_specs(profile: LatencyProfile, profile_path: str, quick: bool, seeds: int) -> list[dict]:
    base = slo_base_ms(profile)
    specs = []
    loads = (0.3, 0.6, 0.9, 1.2) if quick else LOADS
    kinds = [("synthetic", c) for c in CV2S] + [(k, 0) for k in REAL]
    for workers in WORKERS:
        cap = c_small(profile, workers)
        for f in SLO_FACTORS:
            for kind, cv2 in kinds:
                for load in loads:
                    for seed in range(seeds):
                        # ~40k requests, at least 2 s: bursts recur many times in every cell.
                        n = 40_000
                        dur = min(max(n / (load * cap), 2.0), 60.0)
                        specs.append({"profile_path": profile_path, "trace": kind, "cv2": cv2, "workers": workers,
                                      "load": load, "rate": load * cap, "slo_factor": f,
                                      "slo_ms": round(f * base, 3), "duration_s": dur, "seed": seed})
    return specs


def median(xs: list[float]) -> float | None:
    return float(np.median(xs)) if xs else None


def summarize(cells: list[dict]) -> dict[str, Any]:
    def stats(key: str, sel: list[dict]) -> dict[str, Any]:
        xs = [c[key] for c in sel if c[key] is not None]
        return {"n": len(xs), "min": min(xs, default=None), "median": median(xs),
                "mean": float(np.mean(xs)) if xs else None, "max": max(xs, default=None)}
    hard = [c for c in cells if c["best_fixed_attainment"] is not None and c["best_fixed_attainment"] < 0.9995]
    out: dict[str, Any] = {
        "cells": len(cells), "dominated_cells": sum(c["slackfit_dominated"] for c in cells),
        "cells_fixed_reaches_999": sum(c["fixed_reaches_999"] for c in cells),
        "slackfit_999_where_fixed_999": sum(c["fixed_reaches_999"] and c["slackfit_reaches_999"] for c in cells),
        "accuracy_gain_vs_best_fixed_at_equal_attainment_pts": stats("accuracy_gain_vs_fixed_line_pts", cells),
        "attainment_gain_vs_best_fixed_at_equal_accuracy": stats("attainment_gain_vs_fixed_line", cells),
        "attainment_ratio_vs_best_fixed_at_equal_accuracy": stats("attainment_ratio_vs_fixed_line", cells),
        "accuracy_gain_vs_infaas_pts": stats("accuracy_gain_vs_infaas_pts", cells),
        "attainment_gain_vs_infaas": stats("attainment_gain_vs_infaas", cells),
        "hard_cells": len(hard),
        "hard_cells_accuracy_gain_vs_best_fixed_pts": stats("accuracy_gain_vs_fixed_line_pts", hard),
        "hard_cells_attainment_gain_vs_best_fixed": stats("attainment_gain_vs_fixed_line", hard),
    }
    by = {}
    for w in WORKERS:
        for f in SLO_FACTORS:
            sel = [c for c in cells if c["workers"] == w and c["slo_factor"] == f]
            if sel:
                by[f"w{w}_slo{f:g}x"] = {"cells": len(sel), "dominated": sum(c["slackfit_dominated"] for c in sel),
                                         "accuracy_gain_pts_median": stats("accuracy_gain_vs_fixed_line_pts", sel)["median"],
                                         "attainment_gain_median": stats("attainment_gain_vs_fixed_line", sel)["median"]}
    out["by_workers_and_slo"] = by
    return out


def plot(cells: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    kinds = [("synthetic", c) for c in CV2S] + [(k, 0) for k in REAL]
    for w in WORKERS:
        fig, axes = plt.subplots(2 * len(SLO_FACTORS), len(kinds), figsize=(3.0 * len(kinds), 2.4 * 2 * len(SLO_FACTORS)),
                                 squeeze=False, sharex=True)
        for i, f in enumerate(SLO_FACTORS):
            for j, (kind, cv2) in enumerate(kinds):
                sel = sorted((c for c in cells if c["workers"] == w and c["slo_factor"] == f and c["trace"] == kind
                              and c["cv2_asked"] == cv2 and c["seed"] == 0), key=lambda c: c["load"])
                ax_a, ax_c = axes[2 * i][j], axes[2 * i + 1][j]
                if not sel:
                    continue
                loads = [c["load"] for c in sel]
                for name, style in (("SlackFit", "r-*"), ("SlackFit-paper", "m--"), ("INFaaS", "b:"),
                                    ("MaxBatch", "c-."), ("MaxAcc", "g:")):
                    ax_a.plot(loads, [c["policies"][name]["slo_attainment"] for c in sel], style, label=name, ms=5)
                    ax_c.plot(loads, [100 * c["policies"][name]["mean_accuracy"] for c in sel], style, ms=5)
                # The best fixed SubNet at SlackFit's attainment (the interpolated line).
                ax_c.plot(loads, [100 * c["policies"]["SlackFit"]["mean_accuracy"] - (c["accuracy_gain_vs_fixed_line_pts"] or np.nan)
                                  for c in sel], "k-o", ms=3, label="fixed line at SlackFit's attainment")
                bad = [c for c in sel if c["slackfit_dominated"]]
                ax_a.plot([c["load"] for c in bad], [c["policies"]["SlackFit"]["slo_attainment"] for c in bad], "kx", ms=9)
                cvm = np.median([c["cv2_measured"] for c in sel])
                ax_a.set_title(f"{kind if kind != 'synthetic' else 'CV2'} {cv2 or ''} (meas. {cvm:.0f}), SLO {f:g}x", fontsize=8)
                ax_a.set_ylim(max(0.0, min(c["policies"]["INFaaS"]["slo_attainment"] for c in sel) - 0.05), 1.005)
                ax_a.grid(alpha=0.3)
                ax_c.grid(alpha=0.3)
                if j == 0:
                    ax_a.set_ylabel("SLO attainment")
                    ax_c.set_ylabel("accuracy (%)")
                if i == len(SLO_FACTORS) - 1:
                    ax_c.set_xlabel("load (x C_small)")
        h1, l1 = axes[0][0].get_legend_handles_labels()
        h2, l2 = axes[1][0].get_legend_handles_labels()
        fig.legend(h1 + h2[-1:], l1 + l2[-1:], loc="lower center", ncol=6, fontsize=8)
        fig.suptitle(f"{w} worker(s): attainment (upper rows) and accuracy (lower rows) vs load; x = SlackFit dominated", fontsize=10)
        fig.tight_layout(rect=(0, 0.03, 1, 0.97))
        out = path.with_name(f"{path.stem}_w{w}.png")
        fig.savefig(out, dpi=80)
        plt.close(fig)
        print(f"wrote {out}")


# --- SlackFit variants against a finished grid ------------------------------------------------
def _cell_key(trace: str, cv2: float, workers: int, load: float, slo_factor: float, seed: int) -> tuple:
    return (trace, float(cv2), int(workers), float(load), float(slo_factor), int(seed))


def run_slackfit_only(job: tuple[dict, dict]) -> dict:
    spec, kw = job
    profile = LatencyProfile.load(spec["profile_path"])
    tr = make_trace(spec["trace"], spec["cv2"], spec["rate"], spec["duration_s"], spec["seed"])
    r = simulate(tr, profile, SlackFit(profile, num_workers=spec["workers"], **kw),
                 num_workers=spec["workers"], slo_ms=spec["slo_ms"])
    return {"slo_attainment": r.slo_attainment, "mean_accuracy": r.mean_accuracy}


def variants(specs: list[dict], against: Path, kws: list[dict], jobs: int) -> list[dict]:
    """Rerun SlackFit alone with each set of keyword arguments on every cell, judged against
    the other policies' results in a finished grid (``against``): how the variant tables of
    docs/scheduling.md section 6 are made (about a minute per variant on 2 cores). The other
    policies are not rerun, so a variant is compared with the code that wrote ``against``."""
    import json
    base = json.loads(against.read_text())
    others = {_cell_key(c["trace"], c["cv2_asked"], c["workers"], c["load"], c["slo_factor"], c["seed"]):
              {k: v for k, v in c["policies"].items() if k != "SlackFit"} for c in base["cells"]}
    out = []
    for kw in kws:
        with ProcessPoolExecutor(jobs) as ex:
            mine = list(ex.map(run_slackfit_only, [(s, kw) for s in specs], chunksize=4))
        misses, dominated, gains = [], [], []
        for s, me in zip(specs, mine):
            rows = others.get(_cell_key(s["trace"], s["cv2"], s["workers"], s["load"], s["slo_factor"], s["seed"]))
            if rows is None:
                raise SystemExit(f"{against} has no cell {s['trace']} cv2={s['cv2']} w={s['workers']} "
                                 f"load={s['load']} slo={s['slo_factor']}: rerun the grid with the same options")
            fixed = [v for k, v in rows.items() if k.startswith("fixed:")]
            where = f"w{s['workers']} {s['trace']} cv2={s['cv2']} load={s['load']} slo={s['slo_factor']}"
            if any(v["slo_attainment"] >= 0.999 for v in fixed) and me["slo_attainment"] < 0.999:
                misses.append(where)
            if any(is_dominated(me, v) for v in rows.values()):
                dominated.append(where)
            g = accuracy_on_line(fixed_front(fixed), me["slo_attainment"])
            if g is not None:
                gains.append(100 * me["mean_accuracy"] - g)
        rec = {"slackfit_kw": kw, "cells": len(specs), "misses": len(misses), "dominated": len(dominated),
               "accuracy_gain_mean_pts": float(np.mean(gains)) if gains else None,
               "miss_cells": misses, "dominated_cells": dominated}
        print(f"{json.dumps(kw)}: misses {len(misses)}, dominated {len(dominated)} of {len(specs)}, "
              f"gain {rec['accuracy_gain_mean_pts']:+.3f} points")
        out.append(rec)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="4 loads, no real traces' extra seeds")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default="grid")
    ap.add_argument("--variant", action="append", default=[], metavar="JSON",
                    help='SlackFit keyword arguments, e.g. \'{"reserve": 0}\' (repeatable): rerun SlackFit alone '
                         'with each, against the other policies of --against; writes <out>_variants.json')
    ap.add_argument("--against", type=Path, default=RESULTS / "grid.json",
                    help="the finished grid whose other policies the variants are judged against")
    args = ap.parse_args()
    profile, which = resolve_profile(args.profile)
    ppath = str(args.profile) if args.profile else str(Path(__file__).resolve().parent.parent / "superserve" / "data" / "embedded" / "profile.json")
    specs = cell_specs(profile, ppath, args.quick, args.seeds)
    print(which)
    print(f"{len(specs)} cells; C_small(1) = {c_small(profile, 1):.0f} req/s; SLO base {slo_base_ms(profile):.2f} ms")
    if args.variant:
        import json
        recs = variants(specs, args.against, [json.loads(v) for v in args.variant], args.jobs)
        out = RESULTS / f"{args.out}_variants.json"
        out.write_text(json.dumps({"against": args.against.name, "variants": recs}, indent=1))
        print(f"wrote {out}")
        return
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as ex:
        cells = list(ex.map(run_cell, specs, chunksize=1))
    wall = time.perf_counter() - t0
    for c in cells:
        sf = c["policies"]["SlackFit"]
        if c["slackfit_dominated"]:
            print(f"DOMINATED w{c['workers']} {c['trace']} cv2={c['cv2_asked']} load={c['load']} slo={c['slo_factor']}: "
                  f"SF {sf['slo_attainment']:.4f}/{100 * sf['mean_accuracy']:.2f} by "
                  + ", ".join(f"{k} {c['policies'][k]['slo_attainment']:.4f}/{100 * c['policies'][k]['mean_accuracy']:.2f}"
                              for k in c["dominated_by"][:3]))
    summary = summarize(cells)
    import json
    print(json.dumps({k: v for k, v in summary.items() if k != "by_workers_and_slo"}, indent=1))
    for k, v in summary["by_workers_and_slo"].items():
        print(k, v)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{args.out}.json"
    out.write_text(json.dumps({"profile": which.split("(")[0].strip(), "c_small_1_worker_qps": c_small(profile, 1),
                               "slo_base_ms": slo_base_ms(profile), "wall_s": wall, "summary": summary, "cells": cells},
                              indent=1, default=float))
    print(f"wrote {out} ({wall:.0f} s)")
    plot(cells, out)


if __name__ == "__main__":
    main()
