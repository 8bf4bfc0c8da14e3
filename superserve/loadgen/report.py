"""What a replay measured: headline figures, time series, JSON file and a PNG.

Definitions (client side, as the paper's SLO attainment):
* ``slo_attainment`` = in-time answers / all scheduled requests; in time means HTTP 200
  within ``slo_ms`` of the request's scheduled send time.
* ``mean_accuracy`` = mean profiled accuracy of the SubNets that served the in-time requests.
* ``top1_correct`` = fraction of OK answers whose predicted class equals the image's label
  (``top1_in_time``: among in-time answers; ``correct_in_time_fraction``: correct and in
  time over all requests).
* latency percentiles over OK answers (``latency_ms``) and over every answer that came back
  (``latency_all_ms``: shed answers are fast, so they pull these down).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from superserve.loadgen.records import IN_TIME, LATE, NOT_SENT, ReplayRecords

_PCTS = (50, 90, 99, 99.9)


def _pcts(x: np.ndarray) -> dict[str, float]:
    x = x[np.isfinite(x)]
    if not x.size:
        return {f"p{p:g}".replace(".", ""): float("nan") for p in _PCTS} | {"mean": float("nan"), "max": float("nan")}
    vals = np.percentile(x, _PCTS)
    out = {f"p{p:g}".replace(".", ""): round(float(v), 3) for p, v in zip(_PCTS, vals)}
    return out | {"mean": round(float(x.mean()), 3), "max": round(float(x.max()), 3)}


def _r(v: float, nd: int = 5) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), nd)


def summarize(rec: ReplayRecords, *, wall_s: float | None = None) -> dict[str, Any]:
    """Headline figures of a replay (see the module docstring for definitions)."""
    n = len(rec)
    ok = rec.status == 200
    in_time = rec.outcome == IN_TIME
    answered = np.isfinite(rec.latency_s)
    has_pred = ok & (rec.predicted >= 0)
    correct = has_pred & (rec.predicted == rec.label)
    span = float(rec.scheduled_s[-1] - rec.scheduled_s[0]) if n > 1 else 0.0
    done_at = rec.scheduled_s + np.nan_to_num(rec.latency_s, nan=0.0)
    answer_span = float(done_at[ok].max() - rec.scheduled_s[0]) if ok.any() else 0.0
    lag_ms = rec.lag_s * 1000.0
    served = rec.subnet[in_time]
    by_subnet = {sid: int(np.sum(served == k)) for k, sid in enumerate(rec.subnet_ids)}
    server_out = {name: int(np.sum(rec.server_outcome == k)) for k, name in enumerate(rec.server_outcomes)}
    acc = rec.accuracy[in_time]
    return {
        "requests": n,
        "slo_ms": round(rec.slo_s * 1000.0, 3),
        "slo_attainment": _r(float(in_time.sum()) / n if n else 1.0, 6),
        "mean_accuracy": _r(float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan")),
        "top1_correct": _r(float(correct.sum()) / has_pred.sum() if has_pred.any() else float("nan")),
        "top1_in_time": _r(float((correct & in_time).sum()) / (has_pred & in_time).sum()
                           if (has_pred & in_time).any() else float("nan")),
        "correct_in_time_fraction": _r(float((correct & in_time).sum()) / n if n else float("nan")),
        "counts": rec.counts(),
        "sent": int(np.sum(rec.outcome != NOT_SENT)),
        "http_answers": int(np.sum(rec.status > 0)),  # requests that got any HTTP response
        "server_outcomes": server_out,
        "served_by_subnet": by_subnet,
        "latency_ms": _pcts(rec.latency_s[ok] * 1000.0),
        "latency_all_ms": _pcts(rec.latency_s[answered] * 1000.0),
        "queue_ms": _pcts(rec.queue_ms[ok]),
        "compute_ms": _pcts(rec.compute_ms[ok]),
        "mean_batch_size": _r(float(rec.batch_size[ok].mean()) if ok.any() else float("nan"), 3),
        "offered_rps": _r(n / span if span > 0 else float("nan"), 2),
        "throughput_rps": _r(float(ok.sum()) / answer_span if answer_span > 0 else float("nan"), 2),
        "goodput_rps": _r(float(in_time.sum()) / span if span > 0 else float("nan"), 2),
        "duration_s": round(span, 3),
        "send_lag_ms": _pcts(lag_ms) | {"late_1ms": _r(float(np.mean(lag_ms > 1.0)) if n else 0.0, 5)},
        "wall_s": _r(wall_s, 3) if wall_s is not None else None,
    }


def time_series(rec: ReplayRecords, bin_s: float) -> dict[str, list]:
    """Per time bin (by scheduled send time): offered and good rates, attainment, mean served
    accuracy, latency p50/p99 of OK answers, mean batch size."""
    n = len(rec)
    if n == 0:
        return {"t_s": []}
    t0 = float(rec.scheduled_s[0])
    nb = max(1, int(math.ceil((float(rec.scheduled_s[-1]) - t0) / bin_s + 1e-9)))
    b = np.minimum(((rec.scheduled_s - t0) / bin_s).astype(np.int64), nb - 1)
    ok = rec.status == 200
    in_time = rec.outcome == IN_TIME
    ts: dict[str, list] = {k: [] for k in ("t_s", "offered_rps", "goodput_rps", "attainment", "accuracy",
                                           "latency_p50_ms", "latency_p99_ms", "batch_size", "shed_rps")}
    order = np.argsort(b, kind="stable")
    bounds = np.searchsorted(b[order], np.arange(nb + 1))
    not_ok = (rec.outcome != IN_TIME) & (rec.outcome != LATE)
    for j in range(nb):
        sel = order[bounds[j]:bounds[j + 1]]
        m = sel.size
        lat = rec.latency_s[sel][ok[sel]] * 1000.0
        acc = rec.accuracy[sel][in_time[sel]]
        ts["t_s"].append(round(t0 + j * bin_s, 4))
        ts["offered_rps"].append(round(m / bin_s, 2))
        ts["goodput_rps"].append(round(float(in_time[sel].sum()) / bin_s, 2))
        ts["shed_rps"].append(round(float(not_ok[sel].sum()) / bin_s, 2))
        ts["attainment"].append(_r(float(in_time[sel].mean()) if m else float("nan")))
        ts["accuracy"].append(_r(float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan")))
        ts["latency_p50_ms"].append(_r(float(np.percentile(lat, 50)) if lat.size else float("nan"), 3))
        ts["latency_p99_ms"].append(_r(float(np.percentile(lat, 99)) if lat.size else float("nan"), 3))
        bs = rec.batch_size[sel][ok[sel]]
        ts["batch_size"].append(_r(float(bs.mean()) if bs.size else float("nan"), 3))
    return ts


def default_bin_s(duration_s: float) -> float:
    """About 100 bins, never finer than 50 ms."""
    return max(0.05, round(duration_s / 100.0, 3))


def write_json(path: str | Path, summary: dict[str, Any], series: dict[str, list] | None = None,
               extra: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {**(extra or {}), "summary": summary}
    if series is not None:
        doc["time_series"] = series
    path.write_text(json.dumps(clean_nans(doc), indent=1, default=_json_default, allow_nan=False))
    return path


def _json_default(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return None if not np.isfinite(v) else float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def clean_nans(obj: Any) -> Any:
    """NaN -> None recursively (JSON has no NaN)."""
    if isinstance(obj, float):
        return None if not math.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {k: clean_nans(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_nans(v) for v in obj]
    return obj


def plot_run(path: str | Path, series: dict[str, list], summary: dict[str, Any], title: str = "") -> Path:
    """Three panels over time: request rate (offered, in time, missed), mean served accuracy,
    latency p50/p99 of OK answers against the SLO."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def arr(key: str) -> np.ndarray:
        return np.array([np.nan if v is None else v for v in series[key]], dtype=float)

    t = arr("t_s")
    fig, axes = plt.subplots(3, 1, figsize=(8, 7.5), sharex=True)
    ax = axes[0]
    ax.plot(t, arr("offered_rps"), label="offered", color="0.4", lw=1)
    ax.plot(t, arr("goodput_rps"), label="answered in time", color="tab:green", lw=1)
    ax.plot(t, arr("shed_rps"), label="missed (shed/late/error)", color="tab:red", lw=1)
    ax.set_ylabel("requests / s")
    ax.legend(loc="upper right", fontsize=8)
    ax = axes[1]
    ax.plot(t, 100 * arr("accuracy"), color="tab:blue", lw=1)
    ax.set_ylabel("served accuracy (%)")
    ax = axes[2]
    ax.plot(t, arr("latency_p50_ms"), label="p50", color="tab:blue", lw=1)
    ax.plot(t, arr("latency_p99_ms"), label="p99", color="tab:orange", lw=1)
    ax.axhline(summary["slo_ms"], color="tab:red", ls="--", lw=1, label=f"SLO {summary['slo_ms']:g} ms")
    ax.set_ylabel("client latency (ms)")
    ax.set_xlabel("scheduled send time (s)")
    ax.legend(loc="upper right", fontsize=8)
    acc = summary.get("mean_accuracy")
    fig.suptitle(f"{title}  attainment {summary['slo_attainment']:.4f}"
                 + (f", mean accuracy {100 * acc:.2f} %" if acc is not None else ""), fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
