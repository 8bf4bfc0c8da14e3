"""Discrete-event simulator: the router's EDF queue and policy objects on a virtual clock.

Events are arrivals (read in order from the trace), batch completions (a heap keyed by
time) and worker failures (a sorted list). Whenever a worker is free and the queue is not
empty, the simulator does exactly what the router does: optionally shed the requests that
can no longer make their deadline, ask the policy, pop the batch, start it. Ties are
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
"""
from __future__ import annotations

import heapq
import math
import time
from typing import Literal, Sequence

import numpy as np

from superserve.profiling.latency_profile import LatencyProfile
from superserve.scheduling.edf_queue import EdfQueue
from superserve.scheduling.policy import Policy
from superserve.scheduling.request import Request
from superserve.sim.result import IN_TIME, LATE, SHED, SimResult
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


def simulate(trace: Trace | np.ndarray, profile: LatencyProfile, policy: Policy, *,
             num_workers: int = 1, slo_ms: float | np.ndarray = 36.0,
             latency: LatencyModel = "p50", overhead_ms: float = 0.0,
             failures: Sequence[tuple[float, int]] = (), late: LateMode = "shed",
             min_accuracy: float | np.ndarray = 0.0, seed: int | None = 0) -> SimResult:
    """Run ``policy`` over the arrivals of ``trace`` on ``num_workers`` simulated workers.

    ``slo_ms`` is the per-request latency budget (deadline = arrival + slo), one number or
    one per request; ``min_accuracy`` likewise (per-request accuracy floors).
    """
    if late not in ("shed", "serve"):
        raise ValueError(f"late must be 'shed' or 'serve', not {late!r}")
    if num_workers < 1:
        raise ValueError("num_workers must be >= 1")
    if policy.profile is not profile and [s.id for s in policy.profile.subnets] != [s.id for s in profile.subnets]:
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
    overhead_s = overhead_ms / 1000.0
    shed_mode = late == "shed"
    shed = policy.shed
    decide = policy.decide

    finish = [math.nan] * n
    subnet = [-1] * n
    bsize = [0] * n
    outcome = [SHED] * n
    b_start: list[float] = []
    b_subnet: list[int] = []
    b_size: list[int] = []
    b_qlen: list[int] = []
    b_worker: list[int] = []

    queue = EdfQueue()
    push = queue.push
    events: list[tuple[float, int, int, int]] = []  # (finish time, seq, worker, epoch)
    seq = 0
    idle = list(range(num_workers - 1, -1, -1))  # a stack; worker 0 is used first
    alive = [True] * num_workers
    epoch = [0] * num_workers
    running: list[tuple[list[Request], int] | None] = [None] * num_workers  # (batch, SubNet)
    fails = sorted((float(t), int(w)) for t, w in failures)
    fi = 0
    inf = math.inf

    def dispatch(now: float) -> None:
        nonlocal seq
        while idle and queue:
            if shed_mode:
                for r in shed(queue, now):
                    finish[r.id] = now  # answered at once: "cannot make the deadline"
                if not queue:
                    return
            qlen = len(queue)
            d = decide(queue, now)
            if d is None:
                return
            batch = queue.pop_earliest(d.batch_size)
            w = idle.pop()
            s, b = d.subnet_index, len(batch)
            done = now + sample(s, b) + overhead_s
            seq += 1
            heapq.heappush(events, (done, seq, w, epoch[w]))
            running[w] = (batch, s)
            b_start.append(now)
            b_subnet.append(s)
            b_size.append(b)
            b_qlen.append(qlen)
            b_worker.append(w)

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
                epoch[w] += 1  # its pending completion becomes stale
                if w in idle:
                    idle.remove(w)
                job = running[w]
                running[w] = None
                if job is not None:  # the batch log keeps the aborted batch: it was decided
                    for r in job[0]:
                        push(r)
                dispatch(t_fail)
            continue
        if t_arr <= t_evt:
            if t_arr == inf:
                break
            if idle:
                push(Request(i, t_arr, dl[i], fl[i] if fl else 0.0))
                i += 1
                dispatch(t_arr)
            else:
                # Every worker is busy: nothing is decided until the next completion or
                # failure, so queue all arrivals up to then in one tight loop.
                limit = t_evt if t_evt < t_fail else t_fail
                if fl is None:
                    while i < n and arr[i] <= limit:
                        push(Request(i, arr[i], dl[i]))
                        i += 1
                else:
                    while i < n and arr[i] <= limit:
                        push(Request(i, arr[i], dl[i], fl[i]))
                        i += 1
            continue
        now, _, w, ep = heapq.heappop(events)
        if ep != epoch[w]:
            continue  # the worker failed while this batch ran
        job = running[w]
        running[w] = None
        assert job is not None
        batch, s = job
        b = len(batch)
        for r in batch:
            rid = r.id
            finish[rid] = now
            subnet[rid] = s
            bsize[rid] = b
            outcome[rid] = IN_TIME if now <= r.deadline + _EPS_S else LATE
        idle.append(w)
        dispatch(now)
    wall = time.perf_counter() - wall0
    # Requests still queued (every worker died) stay SHED with no answer time.
    return SimResult(
        arrival=arrivals_np, deadline=deadline_np, finish=np.array(finish), subnet=np.array(subnet),
        batch_size=np.array(bsize), outcome=np.array(outcome, dtype=np.int8),
        batch_start=np.array(b_start), batch_subnet=np.array(b_subnet, dtype=np.int64),
        batch_size_log=np.array(b_size, dtype=np.int64), batch_queue_len=np.array(b_qlen, dtype=np.int64),
        batch_worker=np.array(b_worker, dtype=np.int64),
        subnet_accuracy=np.array([s.accuracy for s in profile.subnets]),
        subnet_ids=tuple(s.id for s in profile.subnets), wall_s=wall,
        params={"policy": repr(policy), "num_workers": num_workers, "latency": latency,
                "overhead_ms": overhead_ms, "late_mode": late, "seed": seed,
                "slo_ms": float(np.mean(slo_ms)), "failures": len(fails)})
