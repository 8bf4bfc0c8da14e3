"""Discrete-event simulator: the router's EDF queue and policy objects on a virtual clock.

Events are arrivals (read in order from the trace), batch completions (a heap keyed by
time) and worker failures (a sorted list). The scheduling itself is the router's: one
:class:`~superserve.scheduling.step.SchedulingStep` admits every arrival (queue bound,
hopeless-at-arrival refusal), and whenever a worker is free and the queue is not empty it
sheds, decides and pops; while every worker is busy it expires the hopeless. Ties are
processed failures first, then arrivals, then completions, so runs are deterministic and an
arrival at the very instant a batch completes can join the next batch.

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
  ``overhead_ms`` may be a function of time too.
* ``policy`` may be a :class:`~superserve.scheduling.calibration.CalibratedPlanner`: then
  the planner is fed every simulated batch (compute = the drawn latency, dispatch-to-result
  = that plus the overhead), refreshed every ``refresh_s`` of virtual time, and its rebuilt
  policy installed, exactly as the live router does; with ``profile_check`` it first runs
  the start-up check's probe batches before the first arrival.
"""
from __future__ import annotations

import heapq
import math
import time
from typing import Callable, Literal, Sequence

import numpy as np

from superserve.profiling.latency_profile import LatencyProfile
from superserve.scheduling.calibration import CalibratedPlanner, ProfileCheck
from superserve.scheduling.edf_queue import EdfQueue
from superserve.scheduling.policy import Policy
from superserve.scheduling.request import Request
from superserve.scheduling.step import ADMITTED, REJECTED as STEP_REJECTED, SchedulingStep
from superserve.sim.result import IN_TIME, LATE, REJECTED, SHED, SimResult
from superserve.workload.trace import Trace

LatencyModel = Literal["p50", "p99", "uniform", "lognormal"]
LateMode = Literal["shed", "serve"]
_Z99 = 2.3263478740408408  # standard normal 99th percentile
_EPS_S = 1e-9  # float slack when comparing finish times with deadlines


class _LatencySampler:
    """Batch latency in seconds for (SubNet, batch size), drawn per the latency model."""

    def __init__(self, profile: LatencyProfile, model: LatencyModel, seed: int | None) -> None:
        if model not in ("p50", "p99", "uniform", "lognormal"):
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


def simulate(trace: Trace | np.ndarray, profile: LatencyProfile, policy: Policy | CalibratedPlanner, *,
             num_workers: int = 1, slo_ms: float | np.ndarray = 36.0,
             latency: LatencyModel = "p50", overhead_ms: float | TimeFn = 0.0,
             failures: Sequence[tuple[float, int]] = (), late: LateMode = "shed",
             min_accuracy: float | np.ndarray = 0.0, seed: int | None = 0,
             queue_capacity: int | None = None, admission: bool = True,
             host_speed: float | TimeFn = 1.0, profile_check: bool = True) -> SimResult:
    """Run ``policy`` over the arrivals of ``trace`` on ``num_workers`` simulated workers.

    ``slo_ms`` is the per-request latency budget (deadline = arrival + slo), one number or
    one per request; ``min_accuracy`` likewise (per-request accuracy floors).
    """
    if late not in ("shed", "serve"):
        raise ValueError(f"late must be 'shed' or 'serve', not {late!r}")
    if num_workers < 1:
        raise ValueError("num_workers must be >= 1")
    planner = policy if isinstance(policy, CalibratedPlanner) else None
    policy0 = planner.policy if planner is not None else policy
    if policy0.profile is not profile and [s.id for s in policy0.profile.subnets] != [s.id for s in profile.subnets]:
        raise ValueError("the policy was built for a different profile (SubNet indices would not match)")
    arrivals_np = np.asarray(trace.arrivals if isinstance(trace, Trace) else trace, dtype=np.float64)
    n = int(arrivals_np.size)
    deadline_np = arrivals_np + np.asarray(slo_ms, dtype=np.float64) / 1000.0
    if deadline_np.shape != arrivals_np.shape:
        deadline_np = np.broadcast_to(deadline_np, arrivals_np.shape).copy()
    floors_np = np.broadcast_to(np.asarray(min_accuracy, dtype=np.float64), arrivals_np.shape)
    has_floors = bool(np.any(floors_np > 0))
    arr = arrivals_np.tolist()
    dl = deadline_np.tolist()
    fl = floors_np.tolist() if has_floors else None

    sample = _LatencySampler(profile, latency, seed)
    over_ms, over_fn = _as_fn(overhead_ms)
    speed_c, speed_fn = _as_fn(host_speed)
    if speed_fn is None and not speed_c > 0:
        raise ValueError("host_speed must be > 0")

    def batch_time(s: int, b: int, t: float) -> tuple[float, float]:
        """(compute, overhead) seconds of a batch started at ``t`` on the simulated host."""
        c = sample(s, b) * (speed_fn(t) if speed_fn is not None else speed_c)
        return c, (over_fn(t) if over_fn is not None else over_ms) / 1000.0

    step = SchedulingStep(policy0, shedding=late == "shed")
    admit = admission and late == "shed"

    finish = [math.nan] * n
    subnet = [-1] * n
    bsize = [0] * n
    outcome = [SHED] * n
    b_start: list[float] = []
    b_subnet: list[int] = []
    b_size: list[int] = []
    b_qlen: list[int] = []
    b_worker: list[int] = []

    queue = EdfQueue(queue_capacity)
    push = queue.push
    events: list[tuple[float, int, int, int]] = []  # (finish time, seq, worker, epoch)
    seq = 0
    idle = list(range(num_workers - 1, -1, -1))  # a stack; worker 0 is used first
    alive = [True] * num_workers
    epoch = [0] * num_workers
    # (batch, SubNet, start, compute seconds) per worker
    running: list[tuple[list[Request], int, float, float] | None] = [None] * num_workers
    fails = sorted((float(t), int(w)) for t, w in failures)
    fi = 0
    inf = math.inf
    check_s = 0.0

    if planner is not None and profile_check and planner.config.check_s > 0 and n:
        check_s = _profile_check(planner, step, batch_time, num_workers, arr[0])

    live = num_workers  # workers not failed: rate-aware policies plan per worker

    def dispatch(now: float) -> None:
        nonlocal seq
        while idle and queue:
            out = step.schedule(queue, now, live)
            for r in out.shed:
                finish[r.id] = now  # answered at once: "cannot make the deadline"
            d = out.decision
            if d is None:
                return
            batch = out.batch
            w = idle.pop()
            s, b = d.subnet_index, len(batch)
            c, o = batch_time(s, b, now)
            seq += 1
            heapq.heappush(events, (now + c + o, seq, w, epoch[w]))
            running[w] = (batch, s, now, c)
            b_start.append(now)
            b_subnet.append(s)
            b_size.append(b)
            b_qlen.append(out.queue_len)
            b_worker.append(w)

    def arrive(k: int, t: float) -> None:
        r = Request(k, t, dl[k], fl[k] if fl else 0.0)
        if admit or queue_capacity is not None:
            res = step.arrive(queue, r, t, sum(alive)) if admit else (
                ADMITTED if queue.try_push(r) else STEP_REJECTED)
            if res != ADMITTED:
                finish[k] = t
                if res == STEP_REJECTED:
                    outcome[k] = REJECTED
        else:
            push(r)

    next_refresh = planner.next_refresh if planner is not None else inf

    wall0 = time.perf_counter()
    i = 0
    while True:
        t_arr = arr[i] if i < n else inf
        t_evt = events[0][0] if events else inf
        t_fail = fails[fi][0] if fi < len(fails) else inf
        if t_fail <= t_arr and t_fail <= t_evt and t_fail < inf:
            fi += 1
            w = fails[fi - 1][1]
            if 0 <= w < num_workers and alive[w]:
                alive[w] = False
                live -= 1
                epoch[w] += 1  # its pending completion becomes stale
                if w in idle:
                    idle.remove(w)
                job = running[w]
                running[w] = None
                if job is not None:  # the batch log keeps the aborted batch: it was decided
                    for r in step.requeue(queue, job[0], t_fail, sum(alive)):
                        finish[r.id] = t_fail
                dispatch(t_fail)
            continue
        if t_arr <= t_evt:
            if t_arr == inf:
                break
            if idle:
                arrive(i, t_arr)
                i += 1
                dispatch(t_arr)
            else:
                # Every worker is busy: nothing is decided until the next completion or
                # failure; arrivals are admitted (or refused) and the hopeless expired.
                limit = t_evt if t_evt < t_fail else t_fail
                while i < n and arr[i] <= limit:
                    t = arr[i]
                    arrive(i, t)
                    i += 1
                    if step.shedding:
                        for r in step.expire(queue, t):
                            finish[r.id] = t
            continue
        now, _, w, ep = heapq.heappop(events)
        if ep != epoch[w]:
            continue  # the worker failed while this batch ran
        job = running[w]
        running[w] = None
        assert job is not None
        batch, s, started, compute = job
        b = len(batch)
        for r in batch:
            rid = r.id
            finish[rid] = now
            subnet[rid] = s
            bsize[rid] = b
            outcome[rid] = IN_TIME if now <= r.deadline + _EPS_S else LATE
        idle.append(w)
        if planner is not None:
            planner.observe(s, b, compute * 1000.0, (now - started) * 1000.0, now)
            if now >= next_refresh:
                if planner.refresh(now):
                    step.set_policy(planner.policy)
                next_refresh = planner.next_refresh
        dispatch(now)
    wall = time.perf_counter() - wall0
    # Requests still queued (every worker died) stay SHED with no answer time.
    params = {"policy": repr(step.policy), "num_workers": num_workers, "latency": latency,
              "overhead_ms": overhead_ms if over_fn is None else "f(t)", "late_mode": late, "seed": seed,
              "slo_ms": float(np.mean(slo_ms)), "failures": len(fails), "queue_capacity": queue_capacity,
              "admission": admit, "host_speed": speed_c if speed_fn is None else "f(t)"}
    if planner is not None:
        params["calibration"] = {"rebuilds": planner.rebuilds, "check_s": round(check_s, 3),
                                 "final": planner.estimate.to_dict()}
    return SimResult(
        arrival=arrivals_np, deadline=deadline_np, finish=np.array(finish), subnet=np.array(subnet),
        batch_size=np.array(bsize), outcome=np.array(outcome, dtype=np.int8),
        batch_start=np.array(b_start), batch_subnet=np.array(b_subnet, dtype=np.int64),
        batch_size_log=np.array(b_size, dtype=np.int64), batch_queue_len=np.array(b_qlen, dtype=np.int64),
        batch_worker=np.array(b_worker, dtype=np.int64),
        subnet_accuracy=np.array([s.accuracy for s in profile.subnets]),
        subnet_ids=tuple(s.id for s in profile.subnets), wall_s=wall, params=params)


def _profile_check(planner: CalibratedPlanner, step: SchedulingStep, batch_time, num_workers: int,
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
