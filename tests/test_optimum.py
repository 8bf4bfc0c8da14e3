"""The offline-optimum bound (superserve/sim/optimum.py): it is >= what every policy reaches,
it equals the exact optimum (found by exhaustive search) on tiny on-grid instances, and the
per-batch Pareto reduction does not change it."""
from __future__ import annotations

from functools import lru_cache
from itertools import combinations

import numpy as np
import pytest

from superserve.scheduling.profile import LatencyProfile, SubnetProfile
from superserve.scheduling import ClipperPlus, make_policy, POLICY_NAMES
from superserve.sim import simulate
from superserve.sim.optimum import all_options, independent_windows, offline_optimum, pareto_options, utility


def _profile(spec: list[tuple[float, tuple[float, ...]]]) -> LatencyProfile:
    return LatencyProfile(tuple(SubnetProfile(f"s{i}", acc, lat, lat) for i, (acc, lat) in enumerate(spec)))


def tiny_profile() -> LatencyProfile:
    # small: 3, 4, 5 ms at batch 1, 2, 3; big: 6, 8, 10 ms.
    return _profile([(0.7, (3.0, 4.0, 5.0)), (0.9, (6.0, 8.0, 10.0))])


def exhaustive_optimum(arrivals_ms: list[float], slo_ms: float, profile: LatencyProfile, workers: int) -> float:
    """Best utility over every schedule (p50 latencies). A batch can always be moved earlier to
    when its worker frees up or its last request arrives, so start times range over those."""
    n = len(arrivals_ms)
    arr = tuple(arrivals_ms)
    dead = tuple(a + slo_ms for a in arr)
    lat = [s.latency_p50_ms for s in profile.subnets]
    acc = [s.accuracy for s in profile.subnets]

    @lru_cache(maxsize=None)
    def best(left: frozenset, free: tuple) -> float:
        out = 0.0
        for w in range(workers):
            if w > 0 and free[w] == free[w - 1]:
                continue  # identical workers
            starts = {free[w]} | {a for a in arr if a > free[w]}
            for start in starts:
                ready = [r for r in left if arr[r] <= start]
                for s in range(len(lat)):
                    for b in range(1, min(len(ready), len(lat[s])) + 1):
                        end = start + lat[s][b - 1]
                        fit = [r for r in ready if end <= dead[r] + 1e-9]
                        for group in combinations(fit, b):
                            nxt = tuple(sorted(free[:w] + (end,) + free[w + 1:]))
                            out = max(out, acc[s] * b + best(left - frozenset(group), nxt))
        return out

    return best(frozenset(range(n)), tuple([0.0] * workers))


def test_hand_solved_instance():
    # Three requests at t=0, SLO 9 ms, one worker. Big@3 takes 10 ms (too late); big@2 (8 ms)
    # leaves no time for a third; big@1 + small@1 = 1.6; small@3 (5 ms) serves all: 2.1;
    # small@2 + big@1 ends at 10 ms (too late). The optimum is 2.1.
    p = tiny_profile()
    assert exhaustive_optimum([0.0, 0.0, 0.0], 9.0, p, 1) == pytest.approx(2.1)
    exact = offline_optimum(np.zeros(3), 9.0, p, slot_ms=1.0, relax=False, occupancy=True)
    assert exact.upper_bound == pytest.approx(2.1, abs=1e-6)
    lp = offline_optimum(np.zeros(3), 9.0, p, slot_ms=1.0)
    assert lp.upper_bound >= 2.1 - 1e-6
    # SLO 10 ms: big@3 fits and serves all three at 0.9.
    assert offline_optimum(np.zeros(3), 10.0, p, slot_ms=1.0, relax=False, occupancy=True).upper_bound == pytest.approx(2.7, abs=1e-6)
    # Two workers, SLO 9: big@2 on one, big@1 on the other.
    two = offline_optimum(np.zeros(3), 9.0, p, num_workers=2, slot_ms=1.0, relax=False, occupancy=True)
    assert two.upper_bound == pytest.approx(2.7, abs=1e-6)


def test_staggered_hand_solved_instance():
    # Arrivals 0, 2, 4 ms, SLO 7 (deadlines 7, 9, 11), one worker. Three small runs serve all:
    # small@1 at 0 (ends 3), small@2 at 4 (ends 8): 2.1. A big run costs a request: big@1 at
    # 0 ends 6, after which only one of the other two still fits (small@2 at 6 ends 10 > 9,
    # small@1 twice ends 12 > 11); big@1 for request 1 at 3 ends 9, then request 2 can only
    # start at 9 and would end at 12. So the optimum is 2.1.
    p = tiny_profile()
    assert exhaustive_optimum([0.0, 2.0, 4.0], 7.0, p, 1) == pytest.approx(2.1)
    got = offline_optimum(np.array([0.0, 0.002, 0.004]), 7.0, p, slot_ms=1.0, relax=False, occupancy=True)
    assert got.upper_bound == pytest.approx(2.1, abs=1e-6)


def _random_tiny(seed: int) -> tuple[list[float], float, LatencyProfile, int]:
    rng = np.random.default_rng(seed)
    nsub = int(rng.integers(2, 4))
    spec = []
    for _ in range(nsub):
        base = int(rng.integers(1, 5))
        lat = tuple(float(base + int(v)) for v in np.cumsum(rng.integers(0, 3, 3)))  # may repeat
        if rng.uniform() < 0.3:  # a non-monotone entry, as real profiles have
            lat = (lat[0], lat[1] + 2.0, lat[2])
        spec.append((round(float(rng.uniform(0.5, 0.95)), 3), lat))
    n = int(rng.integers(2, 6))
    arrivals = sorted(float(v) for v in rng.integers(0, 8, n))
    slo = float(rng.integers(3, 11))
    workers = int(rng.integers(1, 3))
    return arrivals, slo, _profile(spec), workers


@pytest.mark.parametrize("seed", range(14))
def test_program_is_exact_on_grid_and_lp_bounds_it(seed):
    """Arrivals and latencies on the 1-ms grid: the integer program equals the exhaustive
    optimum with and without the Pareto reduction, and the LP is >= it."""
    arrivals, slo, p, workers = _random_tiny(seed)
    want = exhaustive_optimum(arrivals, slo, p, workers)
    arr_s = np.array(arrivals) / 1000.0
    for reduce, split in ((True, True), (False, True), (True, False)):
        exact = offline_optimum(arr_s, slo, p, num_workers=workers, slot_ms=1.0, relax=False, occupancy=True,
                                reduce=reduce, split=split)
        assert exact.upper_bound == pytest.approx(want, abs=1e-6), (reduce, split, exact.status)
        for occupancy in (True, False):
            lp = offline_optimum(arr_s, slo, p, num_workers=workers, slot_ms=1.0, reduce=reduce, occupancy=occupancy)
            assert lp.upper_bound >= want - 1e-6


@pytest.mark.parametrize("seed", range(10))
def test_lp_bounds_exhaustive_optimum_off_grid(seed):
    """Arrivals and latencies off any grid; slots finer and coarser than the fastest batch."""
    rng = np.random.default_rng(500 + seed)
    spec = []
    for _ in range(int(rng.integers(2, 4))):
        lat = tuple(float(v) for v in np.cumsum(rng.uniform(0.3, 2.5, 3)) + rng.uniform(0.5, 2.0))
        spec.append((round(float(rng.uniform(0.5, 0.95)), 4), lat))
    p = _profile(spec)
    arrivals = sorted(float(v) for v in rng.uniform(0, 6.0, int(rng.integers(2, 6))))
    slo = float(rng.uniform(3.0, 9.0))
    workers = int(rng.integers(1, 3))
    want = exhaustive_optimum(arrivals, slo, p, workers)
    arr_s = np.array(arrivals) / 1000.0
    for slot in (0.37, 1.0, 2.6):
        for reduce in (True, False):
            lp = offline_optimum(arr_s, slo, p, num_workers=workers, slot_ms=slot, reduce=reduce)
            assert lp.upper_bound >= want - 1e-6, (slot, reduce)
        milp = offline_optimum(arr_s, slo, p, num_workers=workers, slot_ms=slot, relax=False, occupancy=True)
        assert milp.upper_bound >= want - 1e-6


def _policies(profile: LatencyProfile, workers: int) -> list:
    pols = []
    for name in POLICY_NAMES:
        if name.startswith("clipper"):
            continue
        pols.append(make_policy(name, profile, num_workers=workers))  # read by the rate-aware ones
    pols += [ClipperPlus(profile, s.id) for s in profile.subnets]
    return pols


@pytest.mark.parametrize("seed", range(6))
def test_bound_is_above_every_policy(seed):
    """Random bursty instances, off-grid arrivals, a profile whose per-batch Pareto fronts drop
    options: the LP bound (reduced and not, coarse and fine slots) is >= every policy's utility."""
    rng = np.random.default_rng(100 + seed)
    p = LatencyProfile.synthetic(num_subnets=5, max_batch=6)
    if seed % 2:  # make some (SubNet, batch) options dominated at some batch sizes only
        subs = []
        for i, s in enumerate(p.subnets):
            lat = list(s.latency_p50_ms)
            if i == 1:
                lat[3] = p.subnets[2].latency_p50_ms[3] + 0.3
            subs.append(SubnetProfile(s.id, s.accuracy, tuple(lat), tuple(lat)))
        p = LatencyProfile(tuple(subs))
    workers = int(rng.integers(1, 3))
    slo = float(rng.uniform(8.0, 20.0))
    n = int(rng.integers(30, 70))
    span_ms = float(rng.uniform(20.0, 60.0))
    arr = np.sort(np.concatenate([rng.uniform(0, span_ms, n // 2), rng.uniform(0, 3.0, n - n // 2) + span_ms / 3]))
    arr = (arr - arr[0]) / 1000.0
    best_policy = max(utility(simulate(arr, p, pol, num_workers=workers, slo_ms=slo)) for pol in _policies(p, workers))
    bounds = []
    for kw in ({}, {"reduce": False}, {"slot_ms": slo / 7}, {"slot_ms": 0.3, "node_ms": 0.05, "occupancy": True}):
        bounds.append(offline_optimum(arr, slo, p, num_workers=workers, **kw).upper_bound)
    assert min(bounds) >= best_policy - 1e-6
    assert max(bounds) <= n * p.subnets[-1].accuracy + 1e-6


@pytest.mark.parametrize("seed", range(4))
def test_pareto_reduction_keeps_the_bound(seed):
    rng = np.random.default_rng(7 + seed)
    p = LatencyProfile.synthetic(num_subnets=6, max_batch=4)
    subs = []
    for s in p.subnets:  # jitter so that fronts differ by batch size
        lat = tuple(v * float(rng.uniform(0.7, 1.3)) for v in s.latency_p50_ms)
        subs.append(SubnetProfile(s.id, s.accuracy, lat, lat))
    p = LatencyProfile(tuple(subs))
    assert len(pareto_options(p)) < len(all_options(p))
    arr = np.sort(rng.uniform(0, 0.04, 40))
    kw = {"num_workers": int(rng.integers(1, 3)), "slot_ms": 1.0}
    full = offline_optimum(arr, 12.0, p, reduce=False, **kw)
    red = offline_optimum(arr, 12.0, p, reduce=True, **kw)
    assert full.num_options > red.num_options
    assert red.upper_bound == pytest.approx(full.upper_bound, rel=1e-6)


def test_pareto_options_per_batch():
    p = _profile([(0.7, (3.0, 4.0)), (0.8, (2.5, 5.0)), (0.8, (2.5, 6.0)), (0.9, (6.0, 4.5))])
    kept = {(o.subnet, o.batch) for o in pareto_options(p)}
    # batch 1: s1 (0.8, 2.5) dominates s0 and its twin s2; s3 is more accurate. batch 2: s0 is
    # fastest, s3 (0.9, 4.5) beats s1 and s2.
    assert kept == {(1, 1), (3, 1), (0, 2), (3, 2)}


def test_independent_windows_split_at_gaps_of_one_slo():
    a = np.array([0.0, 1.0, 5.0, 15.0, 15.5, 40.0])
    parts = independent_windows(a, 10.0)
    assert [w.tolist() for w in parts] == [[0.0, 1.0, 5.0], [15.0, 15.5], [40.0]]
    assert len(independent_windows(a, 26.0)) == 1
    # Split and whole programs bound the same instance; the split one is solved per window.
    p = tiny_profile()
    arr = a / 1000.0
    whole = offline_optimum(arr, 10.0, p, slot_ms=1.0, split=False)
    parts_ = offline_optimum(arr, 10.0, p, slot_ms=1.0)
    assert parts_.windows == 3 and whole.windows == 1
    assert parts_.upper_bound == pytest.approx(whole.upper_bound, rel=1e-6)
    alone = sum(offline_optimum(w / 1000.0, 10.0, p, slot_ms=1.0).upper_bound for w in independent_windows(a, 10.0))
    assert parts_.upper_bound == pytest.approx(alone, rel=1e-9)


def test_more_workers_never_lower_the_bound():
    p = tiny_profile()
    arr = np.array([0.0, 0.0, 0.001, 0.001, 0.002, 0.004])
    one = offline_optimum(arr, 9.0, p, num_workers=1, slot_ms=1.0).upper_bound
    two = offline_optimum(arr, 9.0, p, num_workers=2, slot_ms=1.0).upper_bound
    assert two >= one - 1e-9 and two <= len(arr) * 0.9 + 1e-9
