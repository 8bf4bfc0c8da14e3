"""Loaders for real traces.

* Azure Functions 2019 (Shahrad et al., "Serverless in the Wild", USENIX ATC 2020):
  invocations per minute per function, columns HashOwner,HashApp,HashFunction,Trigger,1..1440.
  We sum over functions, compress the 24 h to a chosen duration and rescale to a target mean
  rate; arrivals inside each (compressed) minute follow a Gamma process (Poisson by default)
  at that minute's rate. This is how the paper replays the trace (24 h into 120 s).
* Timestamped traces such as the Azure LLM inference trace 2023 (Patel et al., "Splitwise",
  ISCA 2024): one row per request with a TIMESTAMP column, replayed by time compression:
  every gap is scaled by one factor, so bursts stay bursts and the inter-arrival CV^2 is kept.

Both ship with the package (``superserve/data/traces``, CC-BY 4.0, Azure Public Dataset; see
the README there): :func:`bundled_trace_path` finds them by name, :func:`azure_llm` and
:func:`azure_functions_sample` load them.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from superserve.workload.arrivals import modulated_gamma
from superserve.workload.trace import Trace

FUNCTION_KEY_COLUMNS = ("HashOwner", "HashApp", "HashFunction", "Trigger")
TRACES_DIR = Path(__file__).resolve().parent.parent / "data" / "traces"
BUNDLED = {
    "azure_llm_2023_conv": "azure_llm_2023_conv.csv",
    "azure_functions_2019_sample": "azure_functions_2019_sample_invocations.csv",
}
LLM_CITE = "Patel et al., Splitwise: Efficient generative LLM inference using phase splitting, ISCA 2024"
FUNCTIONS_CITE = "Shahrad et al., Serverless in the Wild, USENIX ATC 2020"


def bundled_trace_names() -> list[str]:
    """Names of the traces shipped with the package."""
    return sorted(BUNDLED)


def bundled_trace_path(name: str) -> Path:
    """Path of a trace shipped with the package, by name (file names are accepted too)."""
    key = name[:-4] if name.endswith(".csv") else name
    file = BUNDLED.get(key) or next((f for f in BUNDLED.values() if f == name or f[:-4] == key), None)
    if file is None:
        raise LookupError(f"no bundled trace {name!r}; available: {', '.join(bundled_trace_names())}")
    path = TRACES_DIR / file
    if not path.exists():
        raise FileNotFoundError(f"bundled trace {name!r} is missing from the installation ({path}); "
                                "reinstall superserve with its package data")
    return path


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
    tr.meta.update({"kind": "azure_functions_2019", "source": Path(path).name, "minutes": minutes,
                    "duration_s": duration_s, "mean_rate": mean_rate, "cv2_within_minute": cv2, "trim_idle": trim_idle,
                    "compression": minutes * 60.0 / duration_s,
                    "peak_to_mean_per_minute": float(counts.max() / counts.mean()), "cite": FUNCTIONS_CITE})
    tr.meta["cv2_asked"] = cv2
    tr.meta["cv2_asked_applies_to"] = "arrivals within one (compressed) minute; minute-to-minute changes add to it"
    return tr.record_measured()


def azure_functions_sample(duration_s: float, mean_rate: float, *, cv2: float = 1.0, trim_idle: bool = True,
                           seed: int | None = 0) -> Trace:
    """The bundled Azure Functions 2019 format sample (four functions, active for about four
    hours of the day, so ``trim_idle`` is on by default), replayed by :func:`azure_functions`."""
    return azure_functions(bundled_trace_path("azure_functions_2019_sample"), duration_s, mean_rate, cv2=cv2,
                           trim_idle=trim_idle, seed=seed)


def timestamped(path: str | Path, column: str = "TIMESTAMP", *, mean_rate: float | None = None,
                time_scale: float | None = None, window_s: tuple[float, float] | None = None,
                max_duration_s: float | None = None) -> Trace:
    """Arrivals from a CSV with one timestamp per request (ISO date-times or seconds), replayed
    by time compression.

    ``window_s=(start, end)`` first keeps the requests in that slice of the original trace
    (seconds from its first request). Then every gap is multiplied by one factor: ``time_scale``
    (0.1 plays the trace 10x faster) or the factor that makes the mean rate ``mean_rate``
    requests/s. One factor keeps the shape: bursts stay bursts and the inter-arrival CV^2 is
    unchanged. ``max_duration_s`` then keeps the first seconds of the replay. ``meta`` records
    the factor (``time_scale``; ``compression`` = 1/time_scale) and the measured CV^2 and
    peak-to-mean ratios of the replay.
    """
    if mean_rate is not None and time_scale is not None:
        raise ValueError("give mean_rate or time_scale, not both")
    if (mean_rate is not None and mean_rate <= 0) or (time_scale is not None and time_scale <= 0):
        raise ValueError("mean_rate and time_scale must be > 0")
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
    original_s = float(t[-1]) if t.size else 0.0
    if window_s is not None:
        start, end = float(window_s[0]), float(window_s[1])
        if not 0 <= start < end:
            raise ValueError(f"window_s must be (start, end) with 0 <= start < end, got {window_s}")
        # Shifted by the window's start, not its first request, so the silence before it stays.
        t = t[(t >= start) & (t < end)] - start
        span = min(end, original_s) - start
        native_rate = t.size / span if span > 0 else 0.0
    else:
        native_rate = (t.size - 1) / t[-1] if t.size > 1 and t[-1] > 0 else 0.0
    if t.size == 0:
        raise ValueError(f"{path}: no requests in window {window_s} (the trace spans {original_s:.1f} s)")
    scale = 1.0
    if time_scale is not None:
        scale = time_scale
    elif mean_rate is not None:
        if native_rate <= 0:
            raise ValueError(f"{path}: too few requests to rescale to a mean rate")
        scale = native_rate / mean_rate
    t = t * scale
    if max_duration_s is not None:
        t = t[t < max_duration_s]
    cite = LLM_CITE if "llm" in path.name.lower() else ""
    name = f"timestamped-{path.stem}" + (f"[{window_s[0]:g}:{window_s[1]:g}]" if window_s is not None else "")
    return Trace(t, name, {
        "kind": "timestamped", "source": path.name, "column": column, "native_rate": float(native_rate),
        "window_s": [float(w) for w in window_s] if window_s is not None else None, "time_scale": float(scale),
        "compression": float(1.0 / scale), "max_duration_s": max_duration_s, "cite": cite}).record_measured()


def azure_llm(*, mean_rate: float | None = None, time_scale: float | None = None,
              window_s: tuple[float, float] | None = None, max_duration_s: float | None = None) -> Trace:
    """The bundled Azure LLM inference trace 2023 (conversation service, one hour, 19,366
    requests), replayed by time compression as in :func:`timestamped`."""
    return timestamped(bundled_trace_path("azure_llm_2023_conv"), mean_rate=mean_rate, time_scale=time_scale,
                       window_s=window_s, max_duration_s=max_duration_s)
