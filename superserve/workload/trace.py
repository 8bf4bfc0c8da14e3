"""A request trace: sorted arrival times in seconds plus where they came from."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Trace:
    """Arrival times (seconds from the trace start, sorted) and provenance metadata."""

    arrivals: np.ndarray
    name: str = "trace"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        a = np.asarray(self.arrivals, dtype=np.float64)
        if a.ndim != 1:
            raise ValueError("arrivals must be a 1-d array of seconds")
        if a.size and (np.any(np.diff(a) < 0) or not np.all(np.isfinite(a))):
            a = np.sort(a[np.isfinite(a)])
        self.arrivals = a

    def __len__(self) -> int:
        return int(self.arrivals.size)

    @property
    def duration_s(self) -> float:
        """Span of the trace, from 0 to the last arrival (0 when empty)."""
        return float(self.arrivals[-1]) if self.arrivals.size else 0.0

    @property
    def mean_rate(self) -> float:
        return len(self) / self.duration_s if self.duration_s > 0 else 0.0

    def interarrival_cv2(self) -> float:
        """Squared coefficient of variation of the gaps (1 for Poisson, 0 for constant rate)."""
        gaps = np.diff(self.arrivals)
        if gaps.size < 2 or gaps.mean() == 0:
            return float("nan")
        return float(gaps.var() / gaps.mean() ** 2)

    def rate_series(self, bin_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(bin start times, arrivals per second in each bin)."""
        nbins = max(1, int(np.ceil(self.duration_s / bin_s)))
        counts, edges = np.histogram(self.arrivals, bins=nbins, range=(0.0, nbins * bin_s))
        return edges[:-1], counts / bin_s

    def peak_to_mean(self, bin_s: float) -> float:
        """Busiest ``bin_s`` bin's rate over the whole trace's mean rate (1 for a constant rate).

        Only whole bins count: a trailing partial bin would understate its rate, and a trace
        shorter than one bin has no peak at that scale (NaN)."""
        full = int(np.floor(self.duration_s / bin_s + 1e-9))
        if len(self) == 0 or full == 0:
            return float("nan")
        counts = np.histogram(self.arrivals, bins=full, range=(0.0, full * bin_s))[0]
        return float(counts.max() / bin_s / self.mean_rate)

    def measured(self) -> dict[str, float | None]:
        """What the arrivals themselves show, whatever the generator was asked for.

        ``cv2_measured`` is the inter-arrival CV^2 of the whole stream; ``peak_to_mean_100ms``
        and ``peak_to_mean_1s`` compare the busiest bin with the mean rate. Undefined values
        (too few arrivals) are None, so the dict stays valid JSON."""
        def clean(v: float, nd: int) -> float | None:
            return None if not np.isfinite(v) else round(float(v), nd)
        return {"mean_rate_measured": clean(self.mean_rate, 3),
                "cv2_measured": clean(self.interarrival_cv2(), 4),
                "peak_to_mean_100ms": clean(self.peak_to_mean(0.1), 3),
                "peak_to_mean_1s": clean(self.peak_to_mean(1.0), 3)}

    def record_measured(self) -> "Trace":
        """Store :meth:`measured` in ``meta`` next to the asked parameters; returns self."""
        self.meta.update(self.measured())
        return self

    def summary(self, peak_bin_s: float = 0.1) -> dict[str, Any]:
        """Size, rates and burstiness as measured, with the asked CV^2 when the generator
        recorded one (``cv2_asked``; for the bursty trace it is the Gamma stream's, which the
        constant base stream dilutes, so it differs from ``cv2_measured`` by design)."""
        _, rates = self.rate_series(peak_bin_s)
        out: dict[str, Any] = {
            "requests": len(self), "duration_s": round(self.duration_s, 4),
            "mean_rate": round(self.mean_rate, 2), "peak_rate": float(rates.max(initial=0.0)),
            "peak_bin_s": peak_bin_s, "interarrival_cv2": round(self.interarrival_cv2(), 4)}
        m = self.measured()
        out.update({k: m[k] for k in ("cv2_measured", "peak_to_mean_100ms", "peak_to_mean_1s")})
        for key in ("kind", "cv2_asked", "cv2_asked_applies_to", "compression"):
            if key in self.meta:
                out[key] = self.meta[key]
        return out

    def window(self, start_s: float, end_s: float) -> "Trace":
        """The arrivals in [start_s, end_s), shifted to start at 0."""
        a = self.arrivals
        part = a[(a >= start_s) & (a < end_s)] - start_s
        # The parent's measured statistics do not describe the slice: measure it again.
        return Trace(part, f"{self.name}[{start_s:g}:{end_s:g}]",
                     {**self.meta, "window_s": [start_s, end_s]}).record_measured()

    # --- files ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write a .npz holding the arrivals and the metadata as JSON."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")
        np.savez_compressed(path, arrivals=self.arrivals,
                            info=np.array(json.dumps({"name": self.name, "meta": self.meta})))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Trace":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"trace {path} not found; create one with superserve.workload")
        with np.load(path, allow_pickle=False) as data:
            info = json.loads(str(data["info"]))
            return cls(data["arrivals"], info.get("name", path.stem), info.get("meta", {}))
