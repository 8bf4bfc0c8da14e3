"""Offline optimum for small instances: an upper bound on what any scheduler could achieve.

The paper's objective: maximise the sum over batches of (SubNet accuracy x number of its
requests served by their deadline), with full knowledge of the future. We solve a
time-indexed zero-one program with scipy's HiGHS MILP:

* time is cut into slots of ``slot_ms``; x[t,s,b] = number of batches of SubNet s and size b
  started in slot t (integer, <= workers);
* z[g,t,s] = how many requests of arrival group g a SubNet-s batch started in slot t serves;
* every request is served at most once; a request can join a batch started in slot t if it
  arrived by the end of that slot and the batch finishes (slot start + latency) by its
  deadline; a batch of size b only takes requests whose deadline allows size b (nested
  "Hall" rows per (t, s) make the assignment exact);
* at most ``workers`` batches run in any slot, a batch occupying floor(latency / slot) slots.

Every real schedule maps onto a feasible solution of this program with the same utility
(round each start down to its slot: arrivals are checked against the slot's end, deadlines
against its start, and floor(a + b) >= floor(a) + floor(b) keeps consecutive batches on one
worker from overlapping), and requests arriving in one slot are merged into a group that
keeps the latest deadline. So the program's optimum, and HiGHS's dual bound on it when the
time limit stops the search, is an upper bound; policy utility / bound is a conservative
"fraction of optimal". The bound is tighter for smaller slots (slot_ms <= half the fastest
batch latency by default). ``relax=True`` (default) solves the LP relaxation: on our
instances HiGHS's MILP did not improve on the LP bound within a minute, while the LP itself
solves in seconds; ``relax=False`` runs the MILP and reports its dual bound.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from superserve.profiling.latency_profile import LatencyProfile
from superserve.sim.result import IN_TIME, SimResult


@dataclass(frozen=True)
class OptimumResult:
    upper_bound: float  # proven bound on the best achievable utility (dual bound or LP value)
    best_found: float  # the program's best integer solution (itself an over-estimate of a real schedule)
    status: str
    slot_ms: float
    num_variables: int
    num_integer: int
    solve_s: float
    requests: int


def utility(result: SimResult) -> float:
    """The paper's objective for a simulated run: sum of accuracy over requests in time."""
    ok = result.outcome == IN_TIME
    return float(result.subnet_accuracy[result.subnet[ok]].sum())


def offline_optimum(arrivals: np.ndarray, slo_ms: float, profile: LatencyProfile, *,
                    num_workers: int = 1, slot_ms: float | None = None, time_limit_s: float = 60.0,
                    relax: bool = True) -> OptimumResult:
    """Upper bound on the utility any scheduler reaches on these arrivals (see module doc)."""
    arrivals = np.sort(np.asarray(arrivals, dtype=np.float64))
    arrivals = arrivals - arrivals[0]
    lat = [[v for v in s.latency_p50_ms] for s in profile.subnets]
    acc = [s.accuracy for s in profile.subnets]
    nsub, bmax = len(lat), profile.max_batch
    fastest = min(min(row) for row in lat)
    delta = slot_ms if slot_ms is not None else fastest / 2
    if delta > fastest:
        raise ValueError(f"slot_ms={delta} must not exceed the fastest batch latency {fastest} ms")
    a_ms = arrivals * 1000.0
    # Arrival groups: same slot -> one group with the latest deadline (a relaxation).
    groups: dict[int, list[float]] = defaultdict(list)
    for a in a_ms:
        groups[int(a // delta)].append(a + slo_ms)
    gslot = sorted(groups)
    gsize = [len(groups[k]) for k in gslot]
    gdead = [max(groups[k]) for k in gslot]
    horizon = int(math.ceil((max(gdead)) / delta)) + 1

    # Variable index bookkeeping.
    x_index: dict[tuple[int, int, int], int] = {}
    z_entries: list[tuple[int, int, int, int]] = []  # (group, t, s, bmax_for_group)
    per_ts: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)  # (t,s) -> [(zvar, bmax)]
    nvar = 0
    obj: list[float] = []
    ub: list[float] = []
    integrality: list[int] = []
    for g, (slot, dead) in enumerate(zip(gslot, gdead)):
        for t in range(slot, horizon):
            start = t * delta
            if start + fastest > dead:
                break
            for s in range(nsub):
                room = dead - start
                nb = 0
                while nb < bmax and lat[s][nb] <= room:  # profiles are near-monotone; stop at first miss
                    nb += 1
                if nb == 0:
                    continue
                per_ts[(t, s)].append((nvar, nb))
                z_entries.append((g, t, s, nb))
                obj.append(-acc[s])
                ub.append(gsize[g])
                integrality.append(0)
                nvar += 1
    for (t, s), zs in per_ts.items():
        top = max(nb for _, nb in zs)
        for b in range(1, top + 1):
            x_index[(t, s, b)] = nvar
            obj.append(0.0)
            ub.append(num_workers)
            integrality.append(0 if relax else 1)
            nvar += 1

    rows, cols, vals, lo, hi = [], [], [], [], []
    r = 0
    # (1) each group served at most its size (z's upper bound handles one slot; this all slots)
    by_group: dict[int, list[int]] = defaultdict(list)
    for v, (g, _t, _s, _nb) in enumerate(z_entries):
        by_group[g].append(v)
    for g, vs in by_group.items():
        for v in vs:
            rows.append(r); cols.append(v); vals.append(1.0)
        lo.append(-np.inf); hi.append(gsize[g]); r += 1
    # (2) nested Hall rows per (t, s): requests allowing at most size beta fit in batches <= beta
    for (t, s), zs in per_ts.items():
        for beta in sorted({nb for _, nb in zs}):
            for v, nb in zs:
                if nb <= beta:
                    rows.append(r); cols.append(v); vals.append(1.0)
            for b in range(1, beta + 1):
                rows.append(r); cols.append(x_index[(t, s, b)]); vals.append(-float(b))
            lo.append(-np.inf); hi.append(0.0); r += 1
    # (3) at most num_workers batches in any slot
    occupancy: dict[int, list[int]] = defaultdict(list)
    for (t, s, b), v in x_index.items():
        occ = max(1, int(math.floor(lat[s][b - 1] / delta + 1e-9)))
        for u in range(t, t + occ):
            occupancy[u].append(v)
    for u, vs in occupancy.items():
        for v in vs:
            rows.append(r); cols.append(v); vals.append(1.0)
        lo.append(-np.inf); hi.append(float(num_workers)); r += 1

    a_mat = coo_matrix((vals, (rows, cols)), shape=(r, nvar)).tocsr()
    t0 = time.perf_counter()
    res = milp(c=np.array(obj), constraints=LinearConstraint(a_mat, np.array(lo), np.array(hi)),
               integrality=np.array(integrality), bounds=Bounds(np.zeros(nvar), np.array(ub)),
               options={"time_limit": time_limit_s, "disp": False, "mip_rel_gap": 1e-3})
    solve = time.perf_counter() - t0
    best = -float(res.fun) if res.x is not None else float("nan")
    bound = best
    dual = getattr(res, "mip_dual_bound", None)
    if dual is not None and np.isfinite(dual) and not relax:
        bound = max(best, -float(dual))
    if res.x is None:
        bound = float(sum(gsize) * max(acc))  # nothing found in time: the trivial bound
    return OptimumResult(upper_bound=bound, best_found=best, status=str(res.message), slot_ms=delta,
                         num_variables=nvar, num_integer=int(sum(integrality)), solve_s=solve,
                         requests=int(arrivals.size))
