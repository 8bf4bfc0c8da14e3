"""Loaders for real traces.

* Azure Functions 2019 (Shahrad et al., "Serverless in the Wild", USENIX ATC 2020):
  invocations per minute per function, columns HashOwner,HashApp,HashFunction,Trigger,1..1440.
  We sum over functions, compress the 24 h to a chosen duration and rescale to a target mean
  rate; arrivals inside each (compressed) minute follow a Gamma process (Poisson by default)
  at that minute's rate. This is how the paper replays the trace (24 h into 120 s).
* Timestamped traces such as the Azure LLM inference trace 2023 (Patel et al., "Splitwise",
  ISCA 2024): one row per request with a TIMESTAMP column; rescaled in time or to a rate.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from superserve.workload.arrivals import modulated_gamma
from superserve.workload.trace import Trace

FUNCTION_KEY_COLUMNS = ("HashOwner", "HashApp", "HashFunction", "Trigger")


def azure_functions_minute_counts(path: str | Path) -> np.ndarray:
    """Total invocations per minute over every function in an Azure Functions 2019 file."""
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        minute_cols = [i for i, h in enumerate(header) if h.strip().isdigit()]
        if not minute_cols:
            raise ValueError(f"{path}: no minute columns 1..1440; is this an Azure Functions 2019 file?")
        total = np.zeros(len(minute_cols))
        for row in reader:
            if row:
                total += np.array([float(row[i] or 0) for i in minute_cols])
    return total


def azure_functions(path: str | Path, duration_s: float, mean_rate: float, *, cv2: float = 1.0,
                    trim_idle: bool = False, seed: int | None = 0) -> Trace:
    """Replay the per-minute totals compressed into ``duration_s`` at mean ``mean_rate``.

    ``trim_idle`` drops leading and trailing minutes without invocations first (useful for
    partial files such as the format sample, whose functions stop after four hours)."""
    counts = azure_functions_minute_counts(path)
    if counts.sum() <= 0:
        raise ValueError(f"{path}: the trace holds no invocations")
    if trim_idle:
        nz = np.nonzero(counts)[0]
        counts = counts[nz[0]: nz[-1] + 1]
    minutes = counts.size
    bin_s = duration_s / minutes
    rates = counts / counts.mean() * mean_rate  # per-bin rate, mean over bins = mean_rate
    # Piecewise-constant rate as a piecewise-linear curve with vertical steps (tiny epsilons).
    eps = bin_s * 1e-6
    edges = np.arange(minutes + 1) * bin_s
    times = np.empty(2 * minutes)
    times[0::2] = edges[:-1] + np.where(np.arange(minutes) == 0, 0.0, eps)
    times[1::2] = edges[1:]
    vals = np.repeat(rates, 2)
    tr = modulated_gamma(times, vals, cv2, seed, f"azure-functions-{Path(path).stem}")
    tr.meta.update({"kind": "azure_functions_2019", "source": str(path), "minutes": minutes,
                    "duration_s": duration_s, "mean_rate": mean_rate, "cv2_within_minute": cv2, "trim_idle": trim_idle,
                    "peak_to_mean_per_minute": float(counts.max() / counts.mean()),
                    "cite": "Shahrad et al., Serverless in the Wild, USENIX ATC 2020"})
    return tr


def timestamped(path: str | Path, column: str = "TIMESTAMP", *, mean_rate: float | None = None,
                time_scale: float | None = None, max_duration_s: float | None = None) -> Trace:
    """Arrivals from a CSV with one timestamp per request (ISO date-times or seconds).

    Rescale either by ``time_scale`` (multiply every gap; 0.1 plays the trace 10x faster) or
    to ``mean_rate`` requests/s; then keep the first ``max_duration_s`` seconds if given.
    """
    if mean_rate is not None and time_scale is not None:
        raise ValueError("give mean_rate or time_scale, not both")
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or column not in reader.fieldnames:
            raise ValueError(f"{path}: no column {column!r} (columns: {reader.fieldnames})")
        raw = [row[column] for row in reader if row.get(column)]
    try:
        t = np.array(raw, dtype=np.float64)
    except ValueError:
        stamps = np.array(raw, dtype="datetime64[ns]")
        t = (stamps - stamps.min()).astype(np.int64) / 1e9
    t = np.sort(t - t.min())
    native_rate = (t.size - 1) / t[-1] if t.size > 1 and t[-1] > 0 else 0.0
    scale = 1.0
    if time_scale is not None:
        scale = time_scale
    elif mean_rate is not None:
        scale = native_rate / mean_rate
    t = t * scale
    if max_duration_s is not None:
        t = t[t < max_duration_s]
    cite = ("Patel et al., Splitwise, ISCA 2024" if "llm" in path.name.lower() else "")
    return Trace(t, f"timestamped-{path.stem}", {
        "kind": "timestamped", "source": str(path), "column": column, "native_rate": native_rate,
        "time_scale": scale, "max_duration_s": max_duration_s, "cite": cite})
