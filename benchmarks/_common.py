"""Shared pieces of the scheduling experiments: profile and SLO choice, the policy line-up,
the headline ratios, tables, JSON and paper-style plots (accuracy on x, SLO attainment on y)."""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from superserve.scheduling import INFaaS, ClipperPlus, MaxAcc, MaxBatch, Policy, SlackFit, SlackFitPaper
from superserve.scheduling.conventions import capacity_qps, default_slo_ms, resolve_profile, spanning_subnets
from superserve.scheduling.profile import LatencyProfile
from superserve.sim import simulate
from superserve.workload import Trace

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
NUM_WORKERS = 8  # the paper's 8 GPUs; all rates below are stated relative to their capacity


def rel(path: str | Path) -> str:
    """A path inside the repository as a relative path, else its file name: no machine path
    in results."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return Path(path).name


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--profile", type=Path, default=None,
                   help="latency profile JSON (default: embedded if present, else synthetic)")
    p.add_argument("--workers", type=int, default=NUM_WORKERS)
    p.add_argument("--slo-ms", type=float, default=None, help="default: 2 x p50(largest SubNet, max batch)")
    p.add_argument("--duration", type=float, default=None, help="seconds per synthetic trace")
    p.add_argument("--lookahead", action=argparse.BooleanOptionalAction, default=None,
                   help="SlackFit's queue-aware slack (not in the paper; default: the library's default)")
    return p


def slackfit_kw(args: argparse.Namespace) -> dict[str, Any]:
    """SlackFit's keyword arguments the command line sets (--lookahead)."""
    return {} if getattr(args, "lookahead", None) is None else {"lookahead": args.lookahead}


def setup(args: argparse.Namespace) -> tuple[LatencyProfile, str, float]:
    profile, which = resolve_profile(args.profile)
    slo = args.slo_ms if args.slo_ms is not None else default_slo_ms(profile)
    print(which)
    print(f"SLO {slo} ms = 2 x p50 of {profile.largest.id} at batch {profile.max_batch} "
          f"({profile.largest.latency_p50_ms[-1]:.3f} ms)" if args.slo_ms is None else f"SLO {slo} ms (given)")
    return profile, which, slo


def mid_index(profile: LatencyProfile) -> int:
    return len(profile) // 2


def lineup(profile: LatencyProfile, workers: int = 1, slackfit: dict[str, Any] | None = None,
           **kw: Any) -> list[tuple[str, Policy]]:
    """SlackFit, the paper's rule, the paper's baselines and six Clipper+ versions spanning the
    accuracy range. ``workers``: how many workers the queue feeds (SlackFit's demand per worker);
    ``slackfit``: SlackFit's own keyword arguments (:func:`slackfit_kw`); ``kw``: every policy's."""
    pols: list[tuple[str, Policy]] = [("SlackFit", SlackFit(profile, num_workers=workers, **{**(slackfit or {}), **kw})),
                                      ("SlackFit-paper", SlackFitPaper(profile, **kw)),
                                      ("MaxBatch", MaxBatch(profile, **kw)), ("MaxAcc", MaxAcc(profile, **kw)),
                                      ("INFaaS", INFaaS(profile, **kw))]
    for sid in spanning_subnets(profile, 6):
        pols.append((f"Clipper+({sid})", ClipperPlus(profile, sid, **kw)))
    return pols


def run_lineup(trace: Trace, profile: LatencyProfile, slo: float, workers: int, slackfit: dict[str, Any] | None = None,
               **sim_kw: Any) -> list[dict]:
    rows = []
    for name, pol in lineup(profile, workers, slackfit):
        r = simulate(trace, profile, pol, num_workers=workers, slo_ms=slo, **sim_kw)
        rows.append({"policy": name, "slo_attainment": r.slo_attainment, "mean_accuracy": r.mean_accuracy,
                     "mean_batch_size": float(r.batch_size_log.mean()) if r.batch_size_log.size else 0.0,
                     "late": r.count(1), "shed": r.count(2), "requests": r.num_requests,
                     "sim_requests_per_s": r.sim_requests_per_s})
    return rows


SYSTEMS = ("Clipper+", "INFaaS")  # the paper's headline baselines (serving systems)


def headline(rows: list[dict], target: float = 0.999) -> dict[str, Any]:
    """Headline ratios against the serving systems (Clipper+ versions, INFaaS; the paper's
    headline) and against every baseline including the MaxBatch/MaxAcc policy ablations."""
    systems = _headline([r for r in rows if r["policy"] == "SlackFit" or r["policy"].startswith(SYSTEMS)], target)
    every = _headline(rows, target)
    return {**systems, "vs_all_baselines": every}


def _headline(rows: list[dict], target: float) -> dict[str, Any]:
    """Per trace: (1) accuracy gain at equal SLO attainment: SlackFit's accuracy minus the best
    baseline accuracy among baselines whose attainment is at least SlackFit's (or >= target
    when SlackFit reaches it); (2) SLO-attainment gain at equal accuracy: SlackFit's attainment
    over the best attainment among baselines at least as accurate (within 0.1 points)."""
    sf = next(r for r in rows if r["policy"] == "SlackFit")
    base = [r for r in rows if r["policy"] != "SlackFit"]
    bar = min(sf["slo_attainment"], target) - 1e-12
    same_att = [r for r in base if r["slo_attainment"] >= bar and not math.isnan(r["mean_accuracy"])]
    acc_gain = sf["mean_accuracy"] - max(r["mean_accuracy"] for r in same_att) if same_att else None
    same_acc = [r for r in base if r["mean_accuracy"] >= sf["mean_accuracy"] - 0.001]
    att_gain = sf["slo_attainment"] / max(max(r["slo_attainment"] for r in same_acc), 1e-9) if same_acc else None
    fixed = [r for r in base if r["policy"].startswith("Clipper+")]
    any_fixed = any(r["slo_attainment"] >= target for r in fixed)
    return {
        "slackfit_attainment": sf["slo_attainment"], "slackfit_accuracy": sf["mean_accuracy"],
        "accuracy_gain_at_equal_attainment_pts": None if acc_gain is None else 100 * acc_gain,
        "attainment_gain_at_equal_accuracy_x": att_gain,
        "some_fixed_subnet_reaches_target": any_fixed,
        "slackfit_reaches_target": sf["slo_attainment"] >= target,
        # Pass condition of the issue: if any fixed SubNet reaches the target, SlackFit must too,
        # and its accuracy must be >= every baseline reaching SlackFit's attainment.
        "meets_target_where_fixed_does": (not any_fixed) or sf["slo_attainment"] >= target,
        "accuracy_not_below_equal_attainment_baselines": acc_gain is None or acc_gain >= -1e-9,
    }


def print_table(title: str, rows: list[dict], cols: list[str]) -> None:
    print(f"\n{title}")
    widths = [max(len(c), 10) for c in cols]
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
    for r in rows:
        cells = []
        for c, w in zip(cols, widths):
            v = r.get(c)
            cells.append((f"{v:.5f}" if isinstance(v, float) else str(v)).rjust(w))
        print("  ".join(cells))


def write_json(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=1, default=lambda o: float(o) if isinstance(o, np.floating) else str(o)))
    print(f"\nwrote {path}")
    return path


def plot_grid(name: str, panels: list[tuple[str, list[dict]]], ncols: int = 3, suptitle: str = "") -> Path:
    """One panel per trace: each policy a point (accuracy %, SLO attainment); Clipper+ joined
    by a line, as in the paper's figures."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    style = {"SlackFit": ("*", "tab:red", 180), "SlackFit-paper": ("P", "tab:orange", 90), "MaxBatch": ("s", "tab:blue", 50), "MaxAcc": ("^", "tab:green", 50),
             "INFaaS": ("D", "tab:purple", 45)}
    for ax, (title, rows) in zip(axes.flat, panels):
        clip = [r for r in rows if r["policy"].startswith("Clipper+")]
        ax.plot([100 * r["mean_accuracy"] for r in clip], [r["slo_attainment"] for r in clip], "o-",
                color="tab:gray", ms=5, label="Clipper+ (fixed SubNets)")
        for r in rows:
            if r["policy"] in style:
                m, c, s = style[r["policy"]]
                ax.scatter([100 * r["mean_accuracy"]], [r["slo_attainment"]], marker=m, color=c, s=s,
                           label=r["policy"], zorder=3)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("mean serving accuracy (%)")
        ax.set_ylabel("SLO attainment")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    path = RESULTS / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def summarize_headlines(heads: list[dict]) -> dict[str, Any]:
    out = _summarize(heads)
    out["vs_all_baselines"] = _summarize([h["vs_all_baselines"] for h in heads])
    return out


def _summarize(heads: list[dict]) -> dict[str, Any]:
    acc = [h["accuracy_gain_at_equal_attainment_pts"] for h in heads if h["accuracy_gain_at_equal_attainment_pts"] is not None]
    att = [h["attainment_gain_at_equal_accuracy_x"] for h in heads if h["attainment_gain_at_equal_accuracy_x"] is not None]
    return {"max_accuracy_gain_pts": max(acc, default=None), "mean_accuracy_gain_pts": float(np.mean(acc)) if acc else None,
            "max_attainment_gain_x": max(att, default=None), "mean_attainment_gain_x": float(np.mean(att)) if att else None,
            "all_meet_target_where_fixed_does": all(h["meets_target_where_fixed_does"] for h in heads),
            "all_accuracy_not_below": all(h["accuracy_not_below_equal_attainment_baselines"] for h in heads)}


class Timer:
    def __enter__(self) -> "Timer":
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.s = time.perf_counter() - self.t0


def accuracy_span_pts(profile: LatencyProfile) -> float:
    return 100 * (profile.subnets[-1].accuracy - profile.subnets[0].accuracy)


Fn = Callable[..., Any]
