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
every schedule, so finer slots tighten it there, and barely where everything can be served.
``node_ms`` and the occupancy rows move it far less. Size: about (span / slot) x
(options + SLO / slot + nodes) variables, independent of the request count, so the solve time
grows with the window's span at a given slot (benchmarks/optimality.py reports the figures).
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

    ``slot_ms`` defaults to SLO / 30; ``node_ms`` to a quarter of the slot. ``split`` solves
    the independent windows (gaps of at least one SLO, :func:`independent_windows`)
    separately and adds their values: exact, and much faster on on/off traces. ``occupancy``
    adds the occupancy rows (they matter for exactness of the integer program on tiny
    instances; on larger ones they barely move the LP bound and cost solve time).
    ``time_limit_s`` is per window.
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
    gslots, gsize, gdead = _arrival_groups(a_ms, slo_ms, delta)
    # Nodes: distinct option nodes, sorted; an option hangs on its node.
    onode_raw = np.floor(lat / eta + _EPS).astype(np.int64)
    node_vals = np.unique(onode_raw)
    onode = np.searchsorted(node_vals, onode_raw)
    w_g, w_t, w_node = _group_entries(gslots, gdead, node_vals, float(lat.min()), delta, eta)
    if w_t.size == 0:  # no request can be served by any option
        return {"bound": 0.0, "best": 0.0, "status": "empty", "nvar": 0, "nrow": 0, "nnz": 0, "nint": 0,
                "build": 0.0, "solve": 0.0, "seats": 0.0, "mix": {}, "optimal": True}
    T = int(w_t.max()) + 1
    # Highest node any request can feed in each slot: options above it cannot be filled there.
    top = np.full(T, -1, dtype=np.int64)
    np.maximum.at(top, w_t, w_node)
    xt, xk = np.nonzero(onode[None, :] <= top[:, None])
    # f[t, j] for j >= 1: spare requests passed from node j to node j-1, where slot t has nodes.
    ft, fj = _concat([(np.nonzero(top >= j)[0], np.full(int((top >= j).sum()), j)) for j in range(1, node_vals.size)])
    v = _Variables(xt.size, w_t.size, ft.size, T if carry else 0)
    rows = _Rows()
    _node_rows(rows, v, T, node_vals.size, top, xt, xk, onode, bat, w_t, w_node, ft, fj)
    rows.add(rows.n + w_g, v.w, np.ones(v.nw))  # (2) each group supplies at most its size
    rows.close(gslots.size, gsize.astype(np.float64))
    if occupancy:
        _occupancy_rows(rows, v, T, W, lat, delta, xt, xk)
    if carry:
        _carry_rows(rows, v, T, W, lat, delta, xt, xk)
    a_mat = rows.matrix(v.n)
    c = np.zeros(v.n)
    c[v.x] = -(acc[xk] * bat[xk])
    ub = np.full(v.n, np.inf)
    ub[v.w] = gsize[w_g]
    if carry:
        ub[v.c] = W * float(lat.max())
    build = time.perf_counter() - t_build
    t0 = time.perf_counter()
    sol = _solve(c, a_mat, rows.b_ub(), ub, v, relax, time_limit_s, method, trivial=float(a_ms.size * acc.max()))
    solve = time.perf_counter() - t0
    seats = 0.0
    mix: dict[int, float] = {}
    if sol.x is not None:
        xs = sol.x[v.x]
        seats = float((xs * bat[xk]).sum())
        for b in np.unique(bat):
            m = float(xs[bat[xk] == b].sum())
            if m > 1e-6:
                mix[int(b)] = m
    return {"bound": sol.bound, "best": sol.best, "status": sol.status, "nvar": v.n, "nrow": rows.n,
            "nnz": int(a_mat.nnz), "nint": sol.nint, "build": build, "solve": solve, "seats": seats, "mix": mix,
            "optimal": sol.optimal}


def _arrival_groups(a_ms: np.ndarray, slo_ms: float, delta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrival groups (one per non-empty slot): (slot, size, latest deadline)."""
    gslot_all = np.floor(a_ms / delta + _EPS).astype(np.int64)
    gslots, first = np.unique(gslot_all, return_index=True)
    gsize = np.diff(np.append(first, a_ms.size))
    gdead = a_ms[np.append(first[1:], a_ms.size) - 1] + slo_ms + _TOL_MS  # latest arrival of the group + SLO
    return gslots, gsize, gdead


def _group_entries(gslots: np.ndarray, gdead: np.ndarray, node_vals: np.ndarray, lat_min: float, delta: float,
                   eta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """w[t, g]: group g used in slot t >= g's slot while its room covers the fastest option;
    (group, slot, node it enters at) per variable."""
    parts = []
    for g in range(gslots.size):
        t_last = int(math.floor((gdead[g] - lat_min) / delta + _EPS))
        ts = np.arange(gslots[g], t_last + 1)
        if ts.size == 0:
            continue
        room = gdead[g] - ts * delta
        rn = np.floor(room / eta + _EPS).astype(np.int64)
        nd = np.searchsorted(node_vals, rn, side="right") - 1  # largest option node <= room's node
        ok = nd >= 0
        parts.append((np.full(ok.sum(), g), ts[ok], nd[ok]))
    return _concat(parts, 3)


def _concat(parts: list[tuple[np.ndarray, ...]], width: int = 2) -> tuple[np.ndarray, ...]:
    return tuple(np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, np.int64) for i in range(width))


@dataclass(frozen=True)
class _Variables:
    """Column layout: x (batches per slot and option), w (requests of a group used in a slot),
    f (spare requests passed down a node), c (carry-over per slot)."""

    nx: int
    nw: int
    nf: int
    nc: int

    @property
    def n(self) -> int:
        return self.nx + self.nw + self.nf + self.nc

    @property
    def x(self) -> slice:
        return slice(0, self.nx)

    @property
    def w(self) -> np.ndarray:
        return self.nx + np.arange(self.nw)

    @property
    def f(self) -> np.ndarray:
        return self.nx + self.nw + np.arange(self.nf)

    @property
    def c(self) -> slice:
        return slice(self.nx + self.nw + self.nf, self.n)

    def c_col(self, t: np.ndarray) -> np.ndarray:
        return self.nx + self.nw + self.nf + t


class _Rows:
    """The <= rows of the program, built as sparse triplets block by block."""

    def __init__(self) -> None:
        self.n = 0
        self._rows: list[np.ndarray] = []
        self._cols: list[np.ndarray] = []
        self._vals: list[np.ndarray] = []
        self._ub: list[np.ndarray] = []

    def add(self, r: np.ndarray, c: np.ndarray, v: np.ndarray) -> None:
        self._rows.append(np.asarray(r, np.int64))
        self._cols.append(np.asarray(c, np.int64))
        self._vals.append(np.asarray(v, np.float64))

    def close(self, count: int, ub: np.ndarray) -> None:
        """The block just added has ``count`` rows with these right-hand sides."""
        self.n += count
        self._ub.append(ub)

    def matrix(self, ncols: int):
        return coo_matrix((np.concatenate(self._vals), (np.concatenate(self._rows), np.concatenate(self._cols))),
                          shape=(self.n, ncols)).tocsr()

    def b_ub(self) -> np.ndarray:
        return np.concatenate(self._ub)


def _node_rows(rows: _Rows, v: _Variables, T: int, M: int, top: np.ndarray, xt: np.ndarray, xk: np.ndarray,
               onode: np.ndarray, bat: np.ndarray, w_t: np.ndarray, w_node: np.ndarray, ft: np.ndarray,
               fj: np.ndarray) -> None:
    """(1) one row per (t, j) with j <= top[t]: seats - inflow - f[t, j+1] + f[t, j] <= 0."""
    node_key = np.full((T, M), -1, dtype=np.int64)
    tt, jj = np.nonzero(np.arange(M)[None, :] <= top[:, None])
    node_key[tt, jj] = rows.n + np.arange(tt.size)
    rows.add(node_key[xt, onode[xk]], np.arange(v.nx), bat[xk].astype(np.float64))
    rows.add(node_key[w_t, w_node], v.w, -np.ones(v.nw))
    rows.add(node_key[ft, fj], v.f, np.ones(v.nf))  # leaves node j
    rows.add(node_key[ft, fj - 1], v.f, -np.ones(v.nf))  # enters node j-1
    rows.close(tt.size, np.zeros(tt.size))


def _occupancy_rows(rows: _Rows, v: _Variables, T: int, W: int, lat: np.ndarray, delta: float, xt: np.ndarray,
                    xk: np.ndarray) -> None:
    """(3) options with lat >= delta cover floor(lat / delta) slots from their start; at most W per slot."""
    occ = np.floor(lat / delta + _EPS).astype(np.int64)
    idx = np.nonzero(occ[xk] >= 1)[0]
    reps = occ[xk[idx]]
    var = np.repeat(idx, reps)
    shift = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
    u = xt[var] + shift
    keep = u < T
    rows.add(rows.n + u[keep], var[keep], np.ones(int(keep.sum())))
    rows.close(T, np.full(T, float(W)))


def _carry_rows(rows: _Rows, v: _Variables, T: int, W: int, lat: np.ndarray, delta: float, xt: np.ndarray,
                xk: np.ndarray) -> None:
    """(4) carry-over: C[t-1] + work(t) - C[t] <= W delta; C[t] <= sum of residuals."""
    nx = v.nx
    rows.add(rows.n + xt, np.arange(nx), lat[xk])
    rows.add(rows.n + np.arange(T), v.c_col(np.arange(T)), -np.ones(T))
    rows.add(rows.n + np.arange(1, T), v.c_col(np.arange(T - 1)), np.ones(T - 1))
    rows.close(T, np.full(T, W * delta))
    nres = np.ceil(lat / delta - _EPS).astype(np.int64)  # slots j with lat - j delta > 0
    reps = nres[xk]
    var = np.repeat(np.arange(nx), reps)
    j = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
    u = xt[var] + j
    keep = u < T
    rows.add(rows.n + u[keep], var[keep], -(lat[xk[var[keep]]] - j[keep] * delta))
    rows.add(rows.n + np.arange(T), v.c_col(np.arange(T)), np.ones(T))
    rows.close(T, np.zeros(T))


@dataclass(frozen=True)
class _Solution:
    bound: float  # proven upper bound (the trivial one when nothing was proven)
    best: float
    status: str
    x: np.ndarray | None
    nint: int
    optimal: bool


def _solve(c: np.ndarray, a_mat, b_ub: np.ndarray, ub: np.ndarray, v: _Variables, relax: bool,
           time_limit_s: float, method: str, trivial: float) -> _Solution:
    """The LP (``relax``) or the MILP with integer x and w; ``trivial`` is the bound when
    the solver proves nothing."""
    nvar = v.n
    if relax:
        res = linprog(c, A_ub=a_mat, b_ub=b_ub, bounds=np.column_stack([np.zeros(nvar), ub]), method=method,
                      options={"time_limit": time_limit_s, "presolve": True})
        ok = res.status == 0 and res.x is not None
        best = -float(res.fun) if ok else float("nan")
        return _Solution(best if ok else trivial, best, str(res.message), res.x if ok else None, 0,
                         bool(res.status == 0))
    integ = np.zeros(nvar)
    integ[0:v.nx + v.nw] = 1
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
        bound = trivial
    return _Solution(bound, best, str(res.message), res.x, int(integ.sum()), bool(res.status == 0))


def _empty(n: int, slo_ms: float) -> OptimumResult:
    return OptimumResult(upper_bound=0.0, best_found=0.0, status="no option fits the SLO", slot_ms=float("nan"),
                         node_ms=float("nan"), num_variables=0, num_constraints=0, num_nonzeros=0, num_integer=0,
                         num_options=0, build_s=0.0, solve_s=0.0, requests=n, served_fraction=0.0)
