"""Lookup tables over a latency profile, built once so that policies decide in microseconds.

Policies never walk the profile per request: they bisect into the monotone lists built
here. Measured latencies can wobble (a batch of 5 timed faster than a batch of 4); every
table uses the running maximum over batch sizes, so "fits the slack" stays monotone and a
decision that fits the table also fits the profile.
"""
from __future__ import annotations

from dataclasses import dataclass

from superserve.scheduling.profile import LatencyProfile


@dataclass(frozen=True)
class LatencyTable:
    """Monotone p50 latencies (ms) per SubNet and batch, plus per-batch Pareto frontiers."""

    accuracy: tuple[float, ...]  # per SubNet index (profile order: ascending accuracy)
    ids: tuple[str, ...]
    latency_ms: tuple[tuple[float, ...], ...]  # [s][b-1], non-decreasing in b
    max_batch: int
    # frontier_latency[b-1] ascending, frontier_subnet[b-1] the SubNets on the accuracy/latency
    # Pareto front at batch b: the last one fitting a slack is the most accurate that fits.
    frontier_latency: tuple[tuple[float, ...], ...]
    frontier_subnet: tuple[tuple[int, ...], ...]
    fastest_subnet: int  # lowest batch-1 latency

    @classmethod
    def from_profile(cls, profile: LatencyProfile, quantile: str = "p50") -> "LatencyTable":
        lat: list[tuple[float, ...]] = []
        for s in profile.subnets:
            raw = s.latency_p50_ms if quantile == "p50" else s.latency_p99_ms
            running, row = 0.0, []
            for v in raw:
                running = max(running, v)
                row.append(running)
            lat.append(tuple(row))
        acc = tuple(s.accuracy for s in profile.subnets)
        bmax = profile.max_batch
        f_lat, f_sub = [], []
        for b in range(bmax):
            # Scan by latency; keep a SubNet only if it beats every faster one on accuracy.
            order = sorted(range(len(lat)), key=lambda i: (lat[i][b], -acc[i]))
            best, lats, subs = -1.0, [], []
            for i in order:
                if acc[i] > best:
                    best = acc[i]
                    lats.append(lat[i][b])
                    subs.append(i)
            f_lat.append(tuple(lats))
            f_sub.append(tuple(subs))
        fastest = min(range(len(lat)), key=lambda i: (lat[i][0], -acc[i]))
        return cls(acc, tuple(s.id for s in profile.subnets), tuple(lat), bmax,
                   tuple(f_lat), tuple(f_sub), fastest)

    @property
    def num_subnets(self) -> int:
        return len(self.accuracy)
