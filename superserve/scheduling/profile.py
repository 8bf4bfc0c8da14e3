"""The latency profile: one file format shared by the profiler, the policies and the simulator.

A profile lists the served (Pareto) SubNets, each with its control tuple, cost, accuracy and
the measured latency of one batch at every batch size 1..max_batch (p50 and p99, in ms).
Policies read it through :class:`LatencyProfile`; they never touch the SuperNet. It lives
beside the scheduler that reads it and imports no torch, so the router, the simulator and the
load client read profiles without it; the profiler (superserve.profiling) writes them.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from superserve.bundle_layout import PROFILE_FORMAT as FORMAT


@dataclass(frozen=True)
class SubnetProfile:
    """Profiled facts of one served SubNet."""

    id: str
    accuracy: float  # profiled top-1 accuracy in [0, 1]; what schedulers maximise
    latency_p50_ms: tuple[float, ...]  # index b-1 holds the latency of a batch of b
    latency_p99_ms: tuple[float, ...]
    config: dict[str, Any] = field(default_factory=dict)  # the control tuple, as plain data
    flops: int = 0
    params: int = 0
    val_accuracy: float | None = None
    test_accuracy: float | None = None

    @property
    def max_batch(self) -> int:
        return len(self.latency_p50_ms)

    def latency_ms(self, batch: int, quantile: str = "p50") -> float:
        table = self.latency_p50_ms if quantile == "p50" else self.latency_p99_ms
        return table[batch - 1]


@dataclass(frozen=True)
class LatencyProfile:
    """Served SubNets, sorted by ascending accuracy, plus how the numbers were measured."""

    subnets: tuple[SubnetProfile, ...]
    device: str = "unknown"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.subnets:
            raise ValueError("a latency profile needs at least one SubNet")
        ordered = tuple(sorted(self.subnets, key=lambda s: (s.accuracy, -s.latency_p50_ms[0])))
        object.__setattr__(self, "subnets", ordered)
        batches = {s.max_batch for s in ordered}
        if len(batches) != 1:
            raise ValueError(f"every SubNet must be profiled at the same batch sizes, got {batches}")
        for s in ordered:
            if len(s.latency_p99_ms) != s.max_batch:
                raise ValueError(f"SubNet {s.id}: p50 and p99 tables differ in length")
            if any(not (v > 0 and math.isfinite(v)) for v in s.latency_p50_ms + s.latency_p99_ms):
                raise ValueError(f"SubNet {s.id}: latencies must be finite and positive")

    # --- queries -------------------------------------------------------------------------
    @property
    def max_batch(self) -> int:
        return self.subnets[0].max_batch

    def __len__(self) -> int:
        return len(self.subnets)

    def index_of(self, subnet_id: str) -> int:
        for i, s in enumerate(self.subnets):
            if s.id == subnet_id:
                return i
        raise KeyError(f"SubNet {subnet_id!r} is not in this profile")

    def by_id(self, subnet_id: str) -> SubnetProfile:
        return self.subnets[self.index_of(subnet_id)]

    @property
    def smallest(self) -> SubnetProfile:
        return min(self.subnets, key=lambda s: s.latency_p50_ms[0])

    @property
    def largest(self) -> SubnetProfile:
        return self.subnets[-1]

    def subset(self, ids: Sequence[str]) -> "LatencyProfile":
        return LatencyProfile(tuple(self.by_id(i) for i in ids), self.device, dict(self.meta))

    def scaled(self, factor: float) -> "LatencyProfile":
        """Every latency multiplied by ``factor`` (a machine measured ``factor`` x slower now
        than when profiled); accuracies and ids unchanged."""
        if not (factor > 0 and math.isfinite(factor)):
            raise ValueError(f"scale factor must be finite and positive, got {factor}")
        subs = tuple(replace(s, latency_p50_ms=tuple(v * factor for v in s.latency_p50_ms),
                             latency_p99_ms=tuple(v * factor for v in s.latency_p99_ms)) for s in self.subnets)
        return LatencyProfile(subs, self.device, dict(self.meta, scaled_by=factor))

    # --- files ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "device": self.device,
            "meta": self.meta,
            "batch_sizes": list(range(1, self.max_batch + 1)),
            "subnets": [
                {**asdict(s), "latency_p50_ms": list(s.latency_p50_ms), "latency_p99_ms": list(s.latency_p99_ms)}
                for s in self.subnets
            ],
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LatencyProfile":
        if data.get("format") != FORMAT:
            raise ValueError(f"not a superserve profile (format {data.get('format')!r}, expected {FORMAT!r})")
        subnets = []
        for s in data["subnets"]:
            s = dict(s)
            s["latency_p50_ms"] = tuple(float(v) for v in s["latency_p50_ms"])
            s["latency_p99_ms"] = tuple(float(v) for v in s["latency_p99_ms"])
            subnets.append(SubnetProfile(**s))
        return cls(tuple(subnets), data.get("device", "unknown"), data.get("meta", {}))

    @classmethod
    def load(cls, path: str | Path) -> "LatencyProfile":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"latency profile {path} not found; create one with `superserve profile`")
        return cls.from_dict(json.loads(path.read_text()))

    @classmethod
    def synthetic(
        cls,
        num_subnets: int = 8,
        max_batch: int = 16,
        acc_range: tuple[float, float] = (0.74, 0.80),
        base_ms: tuple[float, float] = (1.0, 6.0),
        per_item_ms: tuple[float, float] = (0.15, 1.2),
        p99_factor: float = 1.2,
    ) -> "LatencyProfile":
        """A profile with the paper's shape (P1-P3) for tests: latency = base + per_item * b,
        both growing with accuracy."""
        subnets = []
        for i in range(num_subnets):
            f = i / max(1, num_subnets - 1)
            acc = acc_range[0] + f * (acc_range[1] - acc_range[0])
            base = base_ms[0] + f * (base_ms[1] - base_ms[0])
            per = per_item_ms[0] + f * (per_item_ms[1] - per_item_ms[0])
            p50 = tuple(base + per * b for b in range(1, max_batch + 1))
            subnets.append(SubnetProfile(
                id=f"syn{i:02d}", accuracy=round(acc, 6), latency_p50_ms=p50,
                latency_p99_ms=tuple(v * p99_factor for v in p50), config={"index": i},
            ))
        return cls(tuple(subnets), device="synthetic", meta={"method": "synthetic linear model"})
