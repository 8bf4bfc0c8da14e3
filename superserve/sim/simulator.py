"""Discrete-event simulator: the router's EDF queue and policy objects on a virtual clock.

Events are arrivals (read in order from the trace), batch completions and worker failures
(one heap keyed by time, then :class:`Tie`); :class:`Simulation` has one method per event.
The scheduling itself is the router's: one
:class:`~superserve.scheduling.step.SchedulingStep` admits every arrival (queue bound,
hopeless-at-arrival refusal), and whenever a worker is free and the queue is not empty it
sheds, decides and pops; while every worker is busy it expires the hopeless. Ties at one
instant are processed failures first, then arrivals, then completions (:class:`Tie`), so runs
are deterministic and an arrival at the very instant a batch completes can join the next batch.

Semantics (parameters):
* ``late="shed"``: before each decision, ``policy.shed(queue, now)`` answers at once, as
  SHED, the requests it gives up on (see the policy's ``shed_rule``). ``late="serve"``: nothing is shed;
  the policy's ``when_late`` decides how hopeless heads are served (they count as LATE).
* ``latency``: "p50" (deterministic profile median), "p99", "uniform" (uniform between p50
  and p99) or "lognormal" (log-normal through p50 and p99), seeded.
* ``overhead_ms``: a fixed cost added to every batch (dispatch, transfer); the policy only
  knows about it if it was built with the same ``overhead_ms``.
* ``failures``: (time_s, worker) pairs. The worker stops for good; its in-flight batch goes
  back to the queue (and is shed there if its deadlines no longer allow it).
* ``queue_capacity``: the router's queue bound (None: unbounded); arrivals beyond it are
  REJECTED. ``admission``: refuse hopeless arrivals at once as the router does (shedding only).
* ``host_speed``: the simulated host runs every batch ``host_speed`` x the profile's latency
  (a number, or a function of virtual time for a host that drifts during the run);
  ``overhead_ms`` may be a function of time too. ``host_shape`` (optional, one factor per
  batch size, index b-1, or one row of them per SubNet) scales it further per batch: a
  host whose latency grows with the batch more steeply than the profiled one (a smaller
  cache: batch 1 runs 0.7 x the profile, batch 12 0.88 x) is not the same host as one
  uniformly faster, and under saturation the difference is the throughput.
* ``policy`` may be a :class:`~superserve.scheduling.calibration.CalibratedPlanner`: then
  the planner is fed every simulated batch (compute = the drawn latency, dispatch-to-result
  = that plus the overhead), refreshed every ``refresh_s`` of virtual time, and its rebuilt
  policy installed, exactly as the live router does; with ``profile_check`` it first runs
  the start-up check's probe batches before the first arrival.
"""
from __future__ import annotations

import enum
import heapq
import math
import time
from typing import Callable, Literal, Sequence

import numpy as np

from superserve.scheduling.calibration import CalibratedPlanner, ProfileCheck
from superserve.scheduling.edf_queue import EdfQueue
from superserve.scheduling.policy import Policy
from superserve.scheduling.profile import LatencyProfile
from superserve.scheduling.request import Request
from superserve.scheduling.step import ADMITTED, REJECTED as STEP_REJECTED, SchedulingStep
from superserve.sim.result import IN_TIME, LATE, REJECTED, SHED, SimResult
from superserve.workload.trace import Trace

LatencyModel = Literal["p50", "p99", "uniform", "lognormal"]
LateMode = Literal["shed", "serve"]
LATENCY_MODELS: tuple[LatencyModel, ...] = ("p50", "p99", "uniform", "lognormal")
LATE_MODES: tuple[LateMode, ...] = ("shed", "serve")
_Z99 = 2.3263478740408408  # standard normal 99th percentile
_EPS_S = 1e-9  # float slack when comparing finish times with deadlines


class _LatencySampler:
    """Batch latency in seconds for (SubNet, batch size), drawn per the latency model."""

    def __init__(self, profile: LatencyProfile, model: LatencyModel, seed: int | None) -> None:
        if model not in LATENCY_MODELS:
            raise ValueError(f"latency model must be p50, p99, uniform or lognormal, not {model!r}")
        self.model = model
        self.p50 = [[v / 1000.0 for v in s.latency_p50_ms] for s in profile.subnets]
        self.p99 = [[max(v, m) / 1000.0 for v, m in zip(s.latency_p99_ms, s.latency_p50_ms)]
                    for s in profile.subnets]
        self.sigma = [[math.log(hi / lo) / _Z99 if hi > lo else 0.0 for lo, hi in zip(a, b)]
                      for a, b in zip(self.p50, self.p99)]
        self.rng = np.random.default_rng(seed)
        self._draws: list[float] = []
        self._k = 0

    def _next(self) -> float:
        if self._k >= len(self._draws):
            if self.model == "uniform":
                self._draws = self.rng.uniform(size=65536).tolist()
            else:
                self._draws = self.rng.standard_normal(65536).tolist()
            self._k = 0
        v = self._draws[self._k]
        self._k += 1
        return v

    def __call__(self, s: int, b: int) -> float:
        if self.model == "p50":
            return self.p50[s][b - 1]
        if self.model == "p99":
            return self.p99[s][b - 1]
        if self.model == "uniform":
            lo = self.p50[s][b - 1]
            return lo + (self.p99[s][b - 1] - lo) * self._next()
        return self.p50[s][b - 1] * math.exp(self.sigma[s][b - 1] * self._next())


TimeFn = Callable[[float], float]


def _as_fn(v: float | TimeFn) -> tuple[float, TimeFn | None]:
    return (0.0, v) if callable(v) else (float(v), None)


class Tie(enum.IntEnum):
    """Which of several events at the same instant runs first (lower first). A worker that
    fails at t starts nothing at t; an arrival at the instant a batch completes is queued
    before that worker looks at the queue again, so it can join the next batch."""

    FAILURE = 0
    ARRIVAL = 1
    COMPLETION = 2


_FAILURE, _ARRIVAL, _COMPLETION = int(Tie.FAILURE), int(Tie.ARRIVAL), int(Tie.COMPLETION)
_IN_TIME, _LATE, _SHED, _REJECTED = (int(o) for o in (IN_TIME, LATE, SHED, REJECTED))
BatchTime = Callable[[int, int, float], tuple[float, float]]


class Simulation:
    """One run on a virtual clock, shaped like SimPy's core: a heap of timed events (worker
    failures and batch completions, ordered by (time, :class:`Tie`, sequence)), the sorted
    arrival stream beside it, and one method per event. Arrivals stay out of the heap: they
    are already in time order, and while every worker is busy a whole run of them is admitted
    in one call (:meth:`arrive_while_busy`), the simulator's fast path.

    Per-request results are lists indexed by request id (``finish``, ``subnet``, ``bsize``,
    ``outcome``); per-batch ones are appended at each decision (``b_*``).
    """

    def __init__(self, arrivals: list[float], deadlines: list[float], floors: list[float] | None,
                 step: SchedulingStep, batch_time: BatchTime, *, num_workers: int, admit: bool,
                 queue_capacity: int | None, failures: Sequence[tuple[float, int]],
                 planner: CalibratedPlanner | None = None) -> None:
        n = len(arrivals)
        self.arr, self.dl, self.fl, self.n = arrivals, deadlines, floors, n
        self.step, self.batch_time, self.planner = step, batch_time, planner
        self.num_workers, self.live = num_workers, num_workers  # live: workers not failed
        self.admit, self.bounded = admit, queue_capacity is not None
        self.queue = EdfQueue(queue_capacity)
        self.finish = [math.nan] * n
        self.subnet = [-1] * n
        self.bsize = [0] * n
        self.outcome = [_SHED] * n
        self.b_start: list[float] = []
        self.b_subnet: list[int] = []
        self.b_size: list[int] = []
        self.b_qlen: list[int] = []
        self.b_worker: list[int] = []
        self.idle = list(range(num_workers - 1, -1, -1))  # a stack; worker 0 is used first
        self.alive = [True] * num_workers
        self.epoch = [0] * num_workers  # a failure bumps it: the pending completion is stale
        # (batch, SubNet, start, compute seconds) per worker
        self.running: list[tuple[list[Request], int, float, float] | None] = [None] * num_workers
        # (time, tie, sequence, worker, epoch); failures never at infinity (they never happen)
        self.events: list[tuple[float, int, int, int, int]] = []
        self.seq = 0
        for t, w in sorted((float(t), int(w)) for t, w in failures):
            if t < math.inf:
                self._schedule(t, _FAILURE, w, -1)
        self.next_refresh = planner.next_refresh if planner is not None else math.inf

    def _schedule(self, t: float, tie: int, worker: int, epoch: int) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, tie, self.seq, worker, epoch))

    # --- the loop ------------------------------------------------------------------------
    def run(self) -> None:
        arr, n, events, inf = self.arr, self.n, self.events, math.inf
        heappop, arrive, busy, fail, complete = (heapq.heappop, self.arrive, self.arrive_while_busy, self.fail,
                                                 self.complete)
        idle = self.idle
        i = 0
        while True:
            if events:
                top = events[0]
                t_evt, tie = top[0], top[1]
            elif i < n:
                t_evt, tie = inf, _COMPLETION
            else:
                break
            if i < n and (arr[i] < t_evt or (arr[i] == t_evt and _ARRIVAL < tie)):
                if idle:
                    arrive(i, arr[i])
                    i += 1
                else:
                    # Nothing is decided before the next event: admit every arrival up to it.
                    i = busy(i, t_evt if _ARRIVAL < tie else math.nextafter(t_evt, -inf))
                continue
            t, tie, _, w, ep = heappop(events)
            if tie == _COMPLETION:
                complete(t, w, ep)
            else:
                fail(t, w)

    # --- events --------------------------------------------------------------------------
    def arrive(self, k: int, t: float) -> None:
        """Request ``k`` arrives while a worker is free: admit it, then schedule."""
        self._admit(k, t)
        self.dispatch(t)

    def arrive_while_busy(self, i: int, limit: float) -> int:
        """Every worker is busy: admit (or refuse) the arrivals from ``i`` up to ``limit``
        and expire the hopeless; returns the index of the first arrival not taken."""
        arr, n, admit, step, queue, finish = self.arr, self.n, self._admit, self.step, self.queue, self.finish
        shedding = step.shedding
        while i < n and arr[i] <= limit:
            t = arr[i]
            admit(i, t)
            i += 1
            if shedding:
                for r in step.expire(queue, t):
                    finish[r.id] = t
        return i

    def complete(self, now: float, w: int, epoch: int) -> None:
        """Worker ``w``'s batch completes at ``now`` (unless the worker failed meanwhile)."""
        if epoch != self.epoch[w]:
            return  # the worker failed while this batch ran
        job = self.running[w]
        self.running[w] = None
        assert job is not None
        batch, s, started, compute = job
        b = len(batch)
        finish, subnet, bsize, outcome = self.finish, self.subnet, self.bsize, self.outcome
        for r in batch:
            rid = r.id
            finish[rid] = now
            subnet[rid] = s
            bsize[rid] = b
            outcome[rid] = _IN_TIME if now <= r.deadline + _EPS_S else _LATE
        self.idle.append(w)
        planner = self.planner
        if planner is not None:
            planner.observe(s, b, compute * 1000.0, (now - started) * 1000.0, now)
            if now >= self.next_refresh:
                if planner.refresh(now):
                    self.step.set_policy(planner.policy)
                self.next_refresh = planner.next_refresh
        self.dispatch(now)

    def fail(self, t: float, w: int) -> None:
        """Worker ``w`` stops for good at ``t``; its batch goes back to the queue. The batch
        log keeps the aborted batch: it was decided."""
        if not (0 <= w < self.num_workers and self.alive[w]):
            return
        self.alive[w] = False
        self.live -= 1
        self.epoch[w] += 1
        if w in self.idle:
            self.idle.remove(w)
        job = self.running[w]
        self.running[w] = None
        if job is not None:
            for r in self.step.requeue(self.queue, job[0], t, self.live):
                self.finish[r.id] = t
        self.dispatch(t)

    # --- scheduling ----------------------------------------------------------------------
    def _admit(self, k: int, t: float) -> None:
        r = Request(k, t, self.dl[k], self.fl[k] if self.fl else 0.0)
        if self.admit:
            res = self.step.arrive(self.queue, r, t, self.live)
        elif self.bounded:
            res = ADMITTED if self.queue.try_push(r) else STEP_REJECTED
        else:
            self.queue.push(r)
            return
        if res != ADMITTED:
            self.finish[k] = t
            if res == STEP_REJECTED:
                self.outcome[k] = _REJECTED

    def dispatch(self, now: float) -> None:
        """While a worker is free and the queue is not empty: shed, decide, pop, start."""
        idle, queue, step, finish = self.idle, self.queue, self.step, self.finish
        while idle and queue:
            out = step.schedule(queue, now, self.live)
            for r in out.shed:
                finish[r.id] = now  # answered at once: "cannot make the deadline"
            d = out.decision
            if d is None:
                return
            batch = out.batch
            w = idle.pop()
            s, b = d.subnet_index, len(batch)
            c, o = self.batch_time(s, b, now)
            self._schedule(now + c + o, _COMPLETION, w, self.epoch[w])
            self.running[w] = (batch, s, now, c)
            self.b_start.append(now)
            self.b_subnet.append(s)
            self.b_size.append(b)
            self.b_qlen.append(out.queue_len)
            self.b_worker.append(w)


def simulate(trace: Trace | np.ndarray, profile: LatencyProfile, policy: Policy | CalibratedPlanner, *,
             num_workers: int = 1, slo_ms: float | np.ndarray = 36.0,
             latency: LatencyModel = "p50", overhead_ms: float | TimeFn = 0.0,
             failures: Sequence[tuple[float, int]] = (), late: LateMode = "shed",
             min_accuracy: float | np.ndarray = 0.0, seed: int | None = 0,
             queue_capacity: int | None = None, admission: bool = True,
             host_speed: float | TimeFn = 1.0, host_shape: Sequence[float] | np.ndarray | None = None,
             profile_check: bool = True) -> SimResult:
    """Run ``policy`` over the arrivals of ``trace`` on ``num_workers`` simulated workers.

    ``slo_ms`` is the per-request latency budget (deadline = arrival + slo), one number or
    one per request; ``min_accuracy`` likewise (per-request accuracy floors).
    """
    if late not in LATE_MODES:
        raise ValueError(f"late must be 'shed' or 'serve', not {late!r}")
    if num_workers < 1:
        raise ValueError("num_workers must be >= 1")
    planner = policy if isinstance(policy, CalibratedPlanner) else None
    policy0 = planner.policy if planner is not None else policy
    if policy0.profile is not profile and [s.id for s in policy0.profile.subnets] != [s.id for s in profile.subnets]:
        raise ValueError("the policy was built for a different profile (SubNet indices would not match)")
    arrivals, deadlines, floors = _request_arrays(trace, slo_ms, min_accuracy)
    batch_time = _batch_timer(_LatencySampler(profile, latency, seed), overhead_ms, host_speed,
                              _shape_table(host_shape, profile))
    step = SchedulingStep(policy0, shedding=late == "shed")
    admit = admission and late == "shed"
    sim = Simulation(arrivals.tolist(), deadlines.tolist(), floors.tolist() if np.any(floors > 0) else None,
                     step, batch_time, num_workers=num_workers, admit=admit, queue_capacity=queue_capacity,
                     failures=failures, planner=planner)
    check_s = 0.0
    if planner is not None and profile_check and planner.config.check_s > 0 and sim.n:
        check_s = _profile_check(planner, step, batch_time, num_workers, sim.arr[0])
        sim.next_refresh = planner.next_refresh
    wall0 = time.perf_counter()
    sim.run()
    wall = time.perf_counter() - wall0
    # Requests still queued (every worker died) stay SHED with no answer time.
    params = {"policy": repr(step.policy), "num_workers": num_workers, "latency": latency,
              "overhead_ms": "f(t)" if callable(overhead_ms) else overhead_ms, "late_mode": late, "seed": seed,
              "slo_ms": float(np.mean(slo_ms)), "failures": len(failures), "queue_capacity": queue_capacity,
              "admission": admit, "host_speed": "f(t)" if callable(host_speed) else float(host_speed),
              "host_shape": host_shape is not None}
    if planner is not None:
        params["calibration"] = {"rebuilds": planner.rebuilds, "check_s": round(check_s, 3),
                                 "final": planner.estimate.to_dict()}
    return SimResult(
        arrival=arrivals, deadline=deadlines, finish=np.array(sim.finish), subnet=np.array(sim.subnet),
        batch_size=np.array(sim.bsize), outcome=np.array(sim.outcome, dtype=np.int8),
        batch_start=np.array(sim.b_start), batch_subnet=np.array(sim.b_subnet, dtype=np.int64),
        batch_size_log=np.array(sim.b_size, dtype=np.int64), batch_queue_len=np.array(sim.b_qlen, dtype=np.int64),
        batch_worker=np.array(sim.b_worker, dtype=np.int64),
        subnet_accuracy=np.array([s.accuracy for s in profile.subnets]),
        subnet_ids=tuple(s.id for s in profile.subnets), wall_s=wall, params=params)


def _request_arrays(trace: Trace | np.ndarray, slo_ms: float | np.ndarray, min_accuracy: float | np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(arrival, deadline, accuracy floor) per request, in seconds and [0, 1]."""
    arrivals = np.asarray(trace.arrivals if isinstance(trace, Trace) else trace, dtype=np.float64)
    deadlines = arrivals + np.asarray(slo_ms, dtype=np.float64) / 1000.0
    if deadlines.shape != arrivals.shape:
        deadlines = np.broadcast_to(deadlines, arrivals.shape).copy()
    floors = np.broadcast_to(np.asarray(min_accuracy, dtype=np.float64), arrivals.shape)
    return arrivals, deadlines, floors


def _shape_table(host_shape: Sequence[float] | np.ndarray | None, profile: LatencyProfile) -> list[list[float]] | None:
    """``host_shape`` as a (SubNet, batch - 1) table of factors, or None."""
    if host_shape is None:
        return None
    a = np.asarray(host_shape, dtype=np.float64)
    n, b = len(profile.subnets), profile.max_batch
    if a.ndim == 1:
        a = np.broadcast_to(a, (n, a.size))
    if a.shape != (n, b) or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"host_shape must hold {b} positive factors per batch size (or {n} rows of them)")
    return a.tolist()


def _batch_timer(sample: _LatencySampler, overhead_ms: float | TimeFn, host_speed: float | TimeFn,
                 shape: list[list[float]] | None = None) -> BatchTime:
    """(compute, overhead) seconds of a batch (SubNet s, size b) started at t on the simulated host."""
    over_ms, over_fn = _as_fn(overhead_ms)
    speed_c, speed_fn = _as_fn(host_speed)
    if speed_fn is None and not speed_c > 0:
        raise ValueError("host_speed must be > 0")

    def batch_time(s: int, b: int, t: float) -> tuple[float, float]:
        c = sample(s, b) * (speed_fn(t) if speed_fn is not None else speed_c)
        if shape is not None:
            c *= shape[s][b - 1]
        return c, (over_fn(t) if over_fn is not None else over_ms) / 1000.0
    return batch_time


def _profile_check(planner: CalibratedPlanner, step: SchedulingStep, batch_time: BatchTime, num_workers: int,
                   first_arrival: float) -> float:
    """The live server's start-up check on the virtual clock: probe batches on every worker
    for ``check_s`` before the first arrival, then the policy rebuilt on what was measured.
    Returns the check's duration (virtual seconds)."""
    cfg = planner.config
    t0 = first_arrival - cfg.check_s
    chk = ProfileCheck(planner.calibrator.profile, cfg, started=t0)
    free_at = [t0] * num_workers
    now = t0
    while True:
        w = min(range(num_workers), key=free_at.__getitem__)
        now = free_at[w]
        if chk.done(now):
            break
        s, b = chk.next_probe()
        c, o = batch_time(s, b, now)
        free_at[w] = now + c + o
        planner.observe(s, b, c * 1000.0, (c + o) * 1000.0, free_at[w])
    end = max(max(free_at), now)
    planner.refresh(end, force=True)
    step.set_policy(planner.policy)
    return end - t0
