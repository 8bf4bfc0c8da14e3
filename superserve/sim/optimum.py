"""Upper bound on the offline optimum: what any scheduler could reach on a trace.

The paper's objective: maximise the sum over requests served by their deadline of the
accuracy of the SubNet that served them, with full knowledge of the future. A *schedule*
here is what the simulator produces with p50 latencies: batches (SubNet s, b requests)
started at times >= the arrival of each of their requests, on ``W`` workers that run one
batch at a time, each taking ``lat(s, b)`` (the profile's p50) and finishing by the deadline
(arrival + SLO) of each of its requests; every request is served at most once.

We bound the best schedule's utility by the optimum of a linear program (HiGHS via
``scipy.optimize.linprog``; ``relax=False`` solves it as a MILP with integer batch counts
and request counts instead). Every step below only *relaxes* (enlarges the feasible set or
raises the objective), so the LP optimum is >= the utility of every schedule: policy
utility / bound is a conservative "fraction of optimal".

**Options (the reduction).** For each batch size b keep only the SubNets on the per-batch
Pareto front of (accuracy up, ``lat(s, b)`` down); ties keep the lowest index.
*Claim*: some optimal schedule uses kept options only. *Proof*: if (s, b) is not kept, some
kept (s', b) has acc(s') >= acc(s) and lat(s', b) <= lat(s, b) (domination is a strict
partial order, so a maximal dominator exists and is kept). Replace every (s, b) batch by
(s', b) with the same start, worker and requests: it finishes no later, so every deadline
still holds and the worker is free no later (the next batch on it still starts after it
ends); utility does not drop. Batches keep their exact size, so latencies need not be
monotone in b (the embedded profile's are not). The reduction is exact: the optimum over
kept options equals the optimum over all served SubNets (``reduce=False`` keeps every
(s, b) to check this on small instances).

**Time.** Slots of ``slot_ms`` (delta). Request groups: the requests arriving in slot g;
the group keeps its *latest* deadline (relaxation). x[t, k] = number of batches of option
k = (s, b) started in slot t (start in [t delta, (t+1) delta)). A request of group g can
ride a batch started in slot t only if g <= t (arrived by the end of the slot; relaxed
from "by the start") and its *room* dmax_g - t delta >= lat_k (using the slot's earliest
start; relaxed). Rooms and latencies meet on a grid of ``node_ms`` (eta): option k hangs
on node floor(lat_k / eta), a request with room R feeds node floor(R / eta) (capped at
the top node); R >= lat_k implies the request's node >= the option's node (relaxed).

**Assignment.** Within one slot the options a request may ride are nested (every option
whose node is <= the request's node), so Hall's condition for filling the slot's seats
from its requests reduces to a path: w[t, g] requests of group g used in slot t enter at
their node, flow f[t, j] carries spare requests from node j down to node j-1, and node j
must supply the b x[t, k] seats of its options (seats filled exactly: a real batch of b
requests is a full batch of option (s, b), so nothing is lost by filling every seat). Each
group supplies at most its size
over all slots. This is an exact transportation model of "assign requests to seats", so
no assignment variables per (request, slot, option) are needed: the program's size
grows with the time span and the option count, not with the number of requests.

**Workers.** Two families of valid inequalities (every real schedule satisfies both):

* occupancy: an option with lat_k >= delta occupies slots t .. t + floor(lat_k / delta)
  - 1; at most W occupied options per slot. On one worker, consecutive batches started
  in slots t1 <= t2 satisfy t2 >= floor((s1 + lat1) / delta) >= t1 + floor(lat1 / delta)
  (faster options with floor 0 in between only push t2 later), so each worker holds at
  most one such interval per slot.
* carry-over (energy): c_w(t) = how far worker w's busy time reaches past the end of slot
  t (>= 0). If batches start in slot t on w, the first starts after the previous one ends,
  so c_w(t-1) + (work started in t) <= delta + c_w(t); if none, c_w(t) = max(0, c_w(t-1) -
  delta) and the same holds. And c_w(t) is the residual of one batch started in some slot
  t' <= t at s < (t'+1) delta, so c_w(t) < lat - (t - t') delta; summed over workers,
  C(t) <= sum over batches of max(0, lat_k - (t - t') delta). These rows make total work
  in any window of slots fit the window plus what is still running at its end: they stop
  the floor() in the occupancy rows from shaving up to delta off every batch.

So every schedule maps to a feasible point of the program with the same utility, and the
program's optimum (the LP value; with ``relax=False`` HiGHS's MILP dual bound) is an upper
bound. Deadlines get the simulator's 1e-9 s tolerance. The LP value is the solver's optimum
to its tolerances (relative ~1e-7), far below any figure we report.

**Windows.** Where two consecutive arrivals are at least one SLO apart, every request
before the gap is due by the next arrival, so no batch mixes the two sides and the earlier
side's batches end before the later side's can start: the optimum is the sum of the
windows' optima, and the sum of their bounds is a bound (``split=True``, the default).
Each window's program starts with idle workers, so the split sum can sit slightly above the
whole program's value (the slot rounding lets up to a slot of work spill over a gap).

**Tightness and cost.** The slot rounding lets each batch start up to one slot early, i.e.
stretches the SLO by up to ``slot_ms``; that is what moves the bound once a trace overloads
every schedule (on overloaded on/off instances like benchmarks/optimality.py's: -0.3 to
-0.4 % from 1.5-ms to 1-ms slots, -0.1 % more to 0.75 ms); where everything can be served it
moved by < 0.05 % from 3-ms to 1-ms slots. ``node_ms`` (0.25 -> 0.1 ms) and the occupancy
rows moved it by about 0.01 % and 0.001 %. Size: about (span / slot) x
(options + SLO / slot + nodes) variables, independent of the request count: a 945-ms
instance at 1-ms slots with the embedded profile's 403 options is ~0.5 M variables, 40-60 s
for HiGHS's interior point on 2 cores (seconds per window on on/off traces).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from scipy.sparse import coo_matrix

from superserve.scheduling.profile import LatencyProfile
from superserve.sim.result import IN_TIME, SimResult

_EPS = 1e-9
_TOL_MS = 1e-6  # the simulator counts a finish within 1e-9 s of the deadline as in time


@dataclass(frozen=True)
class Option:
    """One (SubNet, batch size) a batch can be run with."""

    subnet: int  # index into profile.subnets
    batch: int
    latency_ms: float
    accuracy: float


@dataclass(frozen=True)
class OptimumResult:
    upper_bound: float  # proven bound on the best achievable utility (LP value or MILP dual bound)
    best_found: float  # the program's best solution value (itself >= any real schedule's utility)
    status: str
    slot_ms: float
    node_ms: float
    num_variables: int
    num_constraints: int
    num_nonzeros: int
    num_integer: int
    num_options: int  # (SubNet, batch) options in the program after the reduction
    build_s: float
    solve_s: float
    requests: int
    served_fraction: float = float("nan")  # requests the program's solution serves / requests
    mean_accuracy: float = float("nan")  # accuracy per request the program serves
    batch_mix: dict = field(default_factory=dict)  # batch size -> batches started (program's solution)
    windows: int = 1  # independent windows solved (see independent_windows)
    max_window_solve_s: float = 0.0
    optimal: bool = True  # every window's LP/MILP solved to optimality (else the bound is the trivial one there)


def utility(result: SimResult) -> float:
    """The paper's objective for a simulated run: sum of accuracy over requests in time."""
    ok = result.outcome == IN_TIME
    return float(result.subnet_accuracy[result.subnet[ok]].sum())


def pareto_options(profile: LatencyProfile, quantile: str = "p50") -> list[Option]:
    """For every batch size, the SubNets no other SubNet beats on both accuracy and latency at
    that size (see the module doc for why the optimum never needs the others)."""
    opts: list[Option] = []
    subs = profile.subnets
    for b in range(1, profile.max_batch + 1):
        lat = [s.latency_ms(b, quantile) for s in subs]
        acc = [s.accuracy for s in subs]
        for i in range(len(subs)):
            dominated = False
            for j in range(len(subs)):
                if j == i or acc[j] < acc[i] or lat[j] > lat[i]:
                    continue
                if acc[j] > acc[i] or lat[j] < lat[i] or j < i:
                    dominated = True
                    break
            if not dominated:
                opts.append(Option(i, b, lat[i], acc[i]))
    return opts


def all_options(profile: LatencyProfile, quantile: str = "p50") -> list[Option]:
    return [Option(i, b, s.latency_ms(b, quantile), s.accuracy)
            for i, s in enumerate(profile.subnets) for b in range(1, profile.max_batch + 1)]


def independent_windows(arrivals_ms: np.ndarray, slo_ms: float) -> list[np.ndarray]:
    """Split sorted arrivals where a gap is at least one SLO. Every request before such a gap
    is due by the next arrival, so no batch serves requests from both sides and every batch
    for the earlier side ends before any batch for the later side can start: schedules of the
    whole are exactly unions of schedules of the parts, and optima (and bounds) add up."""
    cut = np.nonzero(np.diff(arrivals_ms) >= slo_ms)[0] + 1
    return np.split(arrivals_ms, cut)


def offline_optimum(arrivals: np.ndarray, slo_ms: float, profile: LatencyProfile, *,
                    num_workers: int = 1, slot_ms: float | None = None, node_ms: float | None = None,
                    time_limit_s: float = 300.0, relax: bool = True, reduce: bool = True,
                    occupancy: bool = False, carry: bool = True, split: bool = True,
                    method: str = "highs-ipm") -> OptimumResult:
    """Upper bound on the utility any scheduler reaches on these arrivals (see module doc).

    ``slot_ms`` defaults to SLO / 30 (1.5 ms at the embedded profile's 45 ms SLO); ``node_ms``
    to a quarter of the slot. ``split`` solves the independent windows (gaps of at least one
    SLO, :func:`independent_windows`) separately and adds their values: exact, and much
    faster on on/off traces. ``occupancy`` adds the occupancy rows (they matter for exactness
    of the integer program on tiny instances; on the benchmark's instances they moved the LP
    bound by under 0.001 % at twice the solve time). ``time_limit_s`` is per window.
    ``method`` is linprog's HiGHS method for the LP."""
    arrivals = np.sort(np.asarray(arrivals, dtype=np.float64))
    if arrivals.size == 0:
        raise ValueError("no arrivals")
    a_ms = (arrivals - arrivals[0]) * 1000.0
    opts = pareto_options(profile) if reduce else all_options(profile)
    opts = [o for o in opts if o.latency_ms <= slo_ms + _EPS]
    if not opts:
        return _empty(arrivals.size, slo_ms)
    delta = float(slot_ms) if slot_ms is not None else slo_ms / 30.0
    eta = float(node_ms) if node_ms is not None else delta / 4.0
    if delta <= 0 or eta <= 0:
        raise ValueError("slot_ms and node_ms must be > 0")
    windows = independent_windows(a_ms, slo_ms) if split else [a_ms]
    parts = [_solve_window(w - w[0], slo_ms, opts, int(num_workers), delta, eta, time_limit_s, relax, occupancy,
                           carry, method) for w in windows]
    bound = sum(q["bound"] for q in parts)
    best = sum(q["best"] for q in parts)
    seats = sum(q["seats"] for q in parts)
    mix: dict[int, float] = {}
    for q in parts:
        for b, m in q["mix"].items():
            mix[b] = round(mix.get(b, 0.0) + m, 3)
    statuses = sorted({q["status"] for q in parts})
    return OptimumResult(upper_bound=bound, best_found=best, status="; ".join(statuses), slot_ms=delta, node_ms=eta,
                         num_variables=sum(q["nvar"] for q in parts), num_constraints=sum(q["nrow"] for q in parts),
                         num_nonzeros=sum(q["nnz"] for q in parts), num_integer=sum(q["nint"] for q in parts),
                         num_options=len(opts), build_s=sum(q["build"] for q in parts),
                         solve_s=sum(q["solve"] for q in parts), requests=int(arrivals.size),
                         served_fraction=seats / arrivals.size, mean_accuracy=best / seats if seats > 0 else float("nan"),
                         batch_mix=dict(sorted(mix.items())), windows=len(parts),
                         max_window_solve_s=max(q["solve"] for q in parts),
                         optimal=all(q["optimal"] for q in parts))


def _solve_window(a_ms: np.ndarray, slo_ms: float, opts: list[Option], W: int, delta: float, eta: float,
                  time_limit_s: float, relax: bool, occupancy: bool, carry: bool, method: str) -> dict:
    """The program of the module doc for one window (arrivals in ms from its first one)."""
    t_build = time.perf_counter()
    lat = np.array([o.latency_ms for o in opts])
    acc = np.array([o.accuracy for o in opts])
    bat = np.array([o.batch for o in opts], dtype=np.int64)

    # Arrival groups (one per non-empty slot), each with its latest deadline.
    gslot_all = np.floor(a_ms / delta + _EPS).astype(np.int64)
    gslots, first = np.unique(gslot_all, return_index=True)
    gsize = np.diff(np.append(first, a_ms.size))
    gdead = a_ms[np.append(first[1:], a_ms.size) - 1] + slo_ms + _TOL_MS  # latest arrival of the group + SLO
    G = gslots.size

    # Nodes: distinct option nodes, sorted; an option hangs on its node.
    onode_raw = np.floor(lat / eta + _EPS).astype(np.int64)
    node_vals = np.unique(onode_raw)
    M = node_vals.size
    onode = np.searchsorted(node_vals, onode_raw)
    lat_min = float(lat.min())

    # w[t, g]: group g used in slot t >= g's slot while its room covers the fastest option.
    w_g, w_t, w_node = [], [], []
    for g in range(G):
        t_last = int(math.floor((gdead[g] - lat_min) / delta + _EPS))
        ts = np.arange(gslots[g], t_last + 1)
        if ts.size == 0:
            continue
        room = gdead[g] - ts * delta
        rn = np.floor(room / eta + _EPS).astype(np.int64)
        nd = np.searchsorted(node_vals, rn, side="right") - 1  # largest option node <= room's node
        ok = nd >= 0
        w_g.append(np.full(ok.sum(), g)); w_t.append(ts[ok]); w_node.append(nd[ok])
    w_g = np.concatenate(w_g) if w_g else np.zeros(0, np.int64)
    w_t = np.concatenate(w_t) if w_t else np.zeros(0, np.int64)
    w_node = np.concatenate(w_node) if w_node else np.zeros(0, np.int64)
    if w_t.size == 0:  # no request can be served by any option
        return {"bound": 0.0, "best": 0.0, "status": "empty", "nvar": 0, "nrow": 0, "nnz": 0, "nint": 0,
                "build": 0.0, "solve": 0.0, "seats": 0.0, "mix": {}, "optimal": True}
    T = int(w_t.max()) + 1
    # Highest node any request can feed in each slot: options above it cannot be filled there.
    top = np.full(T, -1, dtype=np.int64)
    np.maximum.at(top, w_t, w_node)
    xt, xk = np.nonzero(onode[None, :] <= top[:, None])
    nx = xt.size
    # f[t, j] for j >= 1: spare requests passed from node j to node j-1, where slot t has nodes.
    ft, fj = [], []
    for j in range(1, M):
        ts = np.nonzero(top >= j)[0]
        ft.append(ts); fj.append(np.full(ts.size, j))
    ft = np.concatenate(ft) if ft else np.zeros(0, np.int64)
    fj = np.concatenate(fj) if fj else np.zeros(0, np.int64)
    nw, nf = w_t.size, ft.size
    nc = T if carry else 0
    off_x, off_w, off_f, off_c = 0, nx, nx + nw, nx + nw + nf
    nvar = off_c + nc

    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    ub_rows: list[np.ndarray] = []
    nrow = 0

    def add(r: np.ndarray, c: np.ndarray, v: np.ndarray) -> None:
        rows.append(np.asarray(r, np.int64)); cols.append(np.asarray(c, np.int64))
        vals.append(np.asarray(v, np.float64))

    # (1) node rows, one per (t, j) with j <= top[t]: seats - inflow - f[t, j+1] + f[t, j] <= 0.
    node_key = np.full((T, M), -1, dtype=np.int64)
    tt, jj = np.nonzero(np.arange(M)[None, :] <= top[:, None])
    node_key[tt, jj] = nrow + np.arange(tt.size)
    add(node_key[xt, onode[xk]], off_x + np.arange(nx), bat[xk].astype(np.float64))
    add(node_key[w_t, w_node], off_w + np.arange(nw), -np.ones(nw))
    add(node_key[ft, fj], off_f + np.arange(nf), np.ones(nf))  # leaves node j
    add(node_key[ft, fj - 1], off_f + np.arange(nf), -np.ones(nf))  # enters node j-1
    nrow += tt.size
    ub_rows.append(np.zeros(tt.size))
    # (2) each group supplies at most its size.
    add(nrow + w_g, off_w + np.arange(nw), np.ones(nw))
    nrow += G
    ub_rows.append(gsize.astype(np.float64))
    # (3) occupancy: options with lat >= delta cover floor(lat / delta) slots from their start.
    if occupancy:
        occ = np.floor(lat / delta + _EPS).astype(np.int64)
        long_ = occ[xk] >= 1
        idx = np.nonzero(long_)[0]
        reps = occ[xk[idx]]
        var = np.repeat(idx, reps)
        shift = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
        u = xt[var] + shift
        keep = u < T
        add(nrow + u[keep], off_x + var[keep], np.ones(int(keep.sum())))
        nrow += T
        ub_rows.append(np.full(T, float(W)))
    # (4) carry-over: C[t-1] + work(t) - C[t] <= W delta; C[t] <= sum of residuals.
    if carry:
        add(nrow + xt, off_x + np.arange(nx), lat[xk])
        add(nrow + np.arange(T), off_c + np.arange(T), -np.ones(T))
        add(nrow + np.arange(1, T), off_c + np.arange(T - 1), np.ones(T - 1))
        nrow += T
        ub_rows.append(np.full(T, W * delta))
        nres = np.ceil(lat / delta - _EPS).astype(np.int64)  # slots j with lat - j delta > 0
        reps = nres[xk]
        var = np.repeat(np.arange(nx), reps)
        j = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
        u = xt[var] + j
        keep = u < T
        add(nrow + u[keep], off_x + var[keep], -(lat[xk[var[keep]]] - j[keep] * delta))
        add(nrow + np.arange(T), off_c + np.arange(T), np.ones(T))
        nrow += T
        ub_rows.append(np.zeros(T))

    a_mat = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                       shape=(nrow, nvar)).tocsr()
    b_ub = np.concatenate(ub_rows)
    c = np.zeros(nvar)
    c[off_x:off_x + nx] = -(acc[xk] * bat[xk])
    ub = np.full(nvar, np.inf)
    ub[off_w:off_w + nw] = gsize[w_g]
    if carry:
        ub[off_c:] = W * float(lat.max())
    build = time.perf_counter() - t_build

    t0 = time.perf_counter()
    if relax:
        res = linprog(c, A_ub=a_mat, b_ub=b_ub, bounds=np.column_stack([np.zeros(nvar), ub]), method=method,
                      options={"time_limit": time_limit_s, "presolve": True})
        ok = res.status == 0 and res.x is not None
        best = -float(res.fun) if ok else float("nan")
        bound = best if ok else float(a_ms.size * acc.max())  # nothing proven: the trivial bound
        status, xsol = str(res.message), (res.x if ok else None)
        nint = 0
    else:
        integ = np.zeros(nvar)
        integ[off_x:off_w + nw] = 1
        res = milp(c, constraints=LinearConstraint(a_mat, -np.inf, b_ub), integrality=integ,
                   bounds=Bounds(np.zeros(nvar), ub),
                   options={"time_limit": time_limit_s, "disp": False, "mip_rel_gap": 1e-6})
        best = -float(res.fun) if res.x is not None else float("nan")
        dual = getattr(res, "mip_dual_bound", None)
        if dual is not None and np.isfinite(dual):
            bound = max(-float(dual), best if np.isfinite(best) else -np.inf)
        elif res.status == 0 and res.x is not None:
            bound = best
        else:
            bound = float(a_ms.size * acc.max())
        status, xsol, nint = str(res.message), res.x, int(integ.sum())
    solve = time.perf_counter() - t0
    seats = 0.0
    mix: dict[int, float] = {}
    if xsol is not None:
        xs = xsol[off_x:off_x + nx]
        seats = float((xs * bat[xk]).sum())
        for b in np.unique(bat):
            m = float(xs[bat[xk] == b].sum())
            if m > 1e-6:
                mix[int(b)] = m
    return {"bound": bound, "best": best, "status": status, "nvar": nvar, "nrow": nrow, "nnz": int(a_mat.nnz),
            "nint": nint, "build": build, "solve": solve, "seats": seats, "mix": mix,
            "optimal": bool(res.status == 0)}


def _empty(n: int, slo_ms: float) -> OptimumResult:
    return OptimumResult(upper_bound=0.0, best_found=0.0, status="no option fits the SLO", slot_ms=float("nan"),
                         node_ms=float("nan"), num_variables=0, num_constraints=0, num_nonzeros=0, num_integer=0,
                         num_options=0, build_s=0.0, solve_s=0.0, requests=n, served_fraction=0.0)
