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

    def summary(self, peak_bin_s: float = 0.1) -> dict[str, float]:
        _, rates = self.rate_series(peak_bin_s)
        return {"requests": len(self), "duration_s": round(self.duration_s, 4),
                "mean_rate": round(self.mean_rate, 2), "peak_rate": float(rates.max(initial=0.0)),
                "peak_bin_s": peak_bin_s, "interarrival_cv2": round(self.interarrival_cv2(), 4)}

    def window(self, start_s: float, end_s: float) -> "Trace":
        """The arrivals in [start_s, end_s), shifted to start at 0."""
        a = self.arrivals
        part = a[(a >= start_s) & (a < end_s)] - start_s
        return Trace(part, f"{self.name}[{start_s:g}:{end_s:g}]", {**self.meta, "window_s": [start_s, end_s]})

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
