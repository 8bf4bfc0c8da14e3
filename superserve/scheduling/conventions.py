"""Conventions read from a latency profile, shared by the server, the simulator, the load
client and the experiments: which profile, which SLO, how rates relate to capacity."""
from __future__ import annotations

import math
from pathlib import Path

from superserve.bundle_layout import EMBEDDED
from superserve.scheduling.profile import LatencyProfile

EMBEDDED_PROFILE = EMBEDDED.profile

# SLO rule: the paper's 36 ms SLO leaves a GPU room for a full batch of a large SubNet plus
# queueing. We state ours relative to the profile in use: twice the p50 latency of the most
# accurate SubNet at the largest batch, rounded up to 0.5 ms. A request that arrives to an
# idle worker can then be served by any (SubNet, batch) option, and under load it can wait
# for one full batch of the largest SubNet and still be served by it.
SLO_FACTOR = 2.0


def resolve_profile(path: str | Path | None = None) -> tuple[LatencyProfile, str]:
    """The profile at ``path``; else the embedded one if present; else the synthetic one.
    Returns (profile, a line saying which)."""
    if path is not None:
        return LatencyProfile.load(path), f"profile: {path}"
    if EMBEDDED_PROFILE.exists():
        return LatencyProfile.load(EMBEDDED_PROFILE), "profile: embedded (superserve/data/embedded/profile.json)"
    return LatencyProfile.synthetic(), "profile: synthetic (no embedded profile yet; LatencyProfile.synthetic())"


def default_slo_ms(profile: LatencyProfile, factor: float = SLO_FACTOR) -> float:
    """SLO = factor x p50(most accurate SubNet, max batch), rounded up to 0.5 ms."""
    return math.ceil(factor * profile.largest.latency_p50_ms[-1] * 2) / 2


def capacity_qps(profile: LatencyProfile, subnet_index: int, num_workers: int) -> float:
    """Peak throughput of one SubNet at its largest batch on ``num_workers`` workers."""
    s = profile.subnets[subnet_index]
    return num_workers * s.max_batch / (s.latency_p50_ms[-1] / 1000.0)


def spanning_subnets(profile: LatencyProfile, count: int = 6) -> list[str]:
    """``count`` SubNet ids whose accuracies span the served range evenly (the paper's six
    Clipper+ versions): for evenly spaced accuracy targets, the nearest SubNet not yet taken."""
    subs = list(profile.subnets)
    count = min(count, len(subs))
    lo, hi = subs[0].accuracy, subs[-1].accuracy
    chosen: list[int] = []
    for k in range(count):
        target = lo + (hi - lo) * k / max(1, count - 1)
        chosen.append(min((i for i in range(len(subs)) if i not in chosen),
                          key=lambda i: abs(subs[i].accuracy - target)))
    return [subs[i].id for i in sorted(chosen)]
