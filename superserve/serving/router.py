"""The router: deadlines, the global EDF queue, the policy, and results back to callers.

One asyncio loop. ``infer`` stamps an absolute deadline on ``time.monotonic()``, queues the
request and awaits its answer. Whenever a worker is free and the queue is not empty,
``_pump`` runs the scheduling step the simulator runs too
(:class:`~superserve.scheduling.step.SchedulingStep`: shed, decide, pop) and hands the batch
to that worker; arrivals go through the same step's admission. The router never looks inside a tensor: a
request's input is an opaque float32 row that the pool copies into the worker's slab.

Every request gets exactly one :class:`InferResult` with an explicit :class:`Outcome`:
answered in time or late, shed (deadline cannot be met), rejected (queue full),
unavailable (not ready, shutting down, no live worker) or error (the batch failed).

Calibration (superserve/scheduling/calibration.py): every finished batch feeds its compute
time and its dispatch-to-result time to a :class:`CalibratedPlanner`; a timer (never the
request path) refreshes the estimate and installs a policy rebuilt on the rescaled profile
when it moved. Before admitting traffic, :meth:`Router.check_profile` runs a few seconds of
probe batches so the first requests are planned on this host's speed.
"""
from __future__ import annotations

import asyncio
import enum
import itertools
import time
from collections import deque
from dataclasses import dataclass

from superserve.scheduling import EdfQueue, Request
from superserve.scheduling.calibration import CalibratedPlanner, CheckReport, ProfileCheck
from superserve.scheduling.policy import Decision, Policy
from superserve.scheduling.step import ADMITTED, SHED, SchedulingStep
from superserve.serving.messages import BatchDone, BatchFailed, RunBatch
from superserve.serving.metrics import ServingMetrics
from superserve.serving.model_info import ModelInfo
from superserve.serving.pool import WorkerHandle, WorkerPool, WorkerState


class Outcome(str, enum.Enum):
    IN_TIME = "in_time"
    LATE = "late"
    SHED = "shed"
    REJECTED = "rejected"
    UNAVAILABLE = "unavailable"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class InferResult:
    outcome: Outcome
    logits: bytes | None = None  # float32 little-endian, num_classes values
    subnet_id: str = ""
    accuracy: float = 0.0
    batch_size: int = 0
    queue_ms: float = 0.0
    compute_ms: float = 0.0
    worker: int = -1
    message: str = ""  # why, for every outcome but IN_TIME / LATE

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.IN_TIME, Outcome.LATE)


@dataclass(slots=True)
class Pending:
    """The router's per-request state, carried in ``Request.payload``."""

    row: bytes  # the input, float32, already validated by the API layer
    future: asyncio.Future
    slo_ms: float


@dataclass(slots=True)
class Inflight:
    seq: int
    decision: Decision
    batch: list[Request]  # empty for a probe batch of the profile check
    dispatched: float
    watchdog: asyncio.TimerHandle | None = None
    size: int = 0  # rows the worker runs


class Router:
    def __init__(self, info: ModelInfo, policy: Policy | CalibratedPlanner, metrics: ServingMetrics, *,
                 queue_capacity: int, late: str = "shed", hang_timeout_s: float = 2.0,
                 response_margin_ms: float = 0.0, events=None) -> None:
        """``policy``: a fixed policy, or a :class:`CalibratedPlanner` whose policy follows
        the host's measured speed. ``events``: an EventLog for calibration points."""
        self.info = info
        self.planner = policy if isinstance(policy, CalibratedPlanner) else None
        self.step = SchedulingStep(self.planner.policy if self.planner else policy, shedding=late == "shed")
        self.metrics = metrics
        self.events = events
        self.shedding = late == "shed"
        self.check_report: CheckReport | None = None
        self._check: ProfileCheck | None = None
        self._check_done: asyncio.Future | None = None
        self._refresh_timer: asyncio.TimerHandle | None = None
        # The router's own loop lag (a 10-ms timer's lateness): when this process is starved
        # of CPU, requests are stamped late and answers written late, outside the clock the
        # deadlines are planned on. Its recent p99 is added to the response margin (read on
        # the request path as one float; measured off it).
        self.lag_margin_ms = 0.0
        self._lags: deque[tuple[float, float]] = deque(maxlen=400)
        self._lag_due = 0.0
        self._lag_timer: asyncio.TimerHandle | None = None
        self.hang_timeout_s = hang_timeout_s
        # Scheduling plans each request to finish this much before its deadline (at most a
        # quarter of its slo_ms): the part of the client's latency outside the router's clock.
        self.response_margin_ms = max(0.0, float(response_margin_ms))
        self.queue = EdfQueue(queue_capacity)
        self.pool: WorkerPool | None = None
        self._free: deque[WorkerHandle] = deque()
        self._ids = itertools.count()
        self._seqs = itertools.count(1)
        self._pump_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.accepting = False  # set once every worker is warm; cleared at shutdown
        self._all_warm = asyncio.Event()
        self._failed_start: str | None = None
        self.completed = 0
        self._ready: set[WorkerHandle] = set()  # warm and alive; kept by events, no scan per request
        acc = {s.id: s.accuracy for s in info.profile.subnets}
        self._accuracy = [acc[sid] for sid in info.subnet_ids]
        self._out_bytes = info.output_bytes
        metrics.watch(lambda: len(self.queue), lambda: len(self._ready),
                      lambda: self.pool.num_alive if self.pool else 0)
        if self.planner is not None:
            metrics.watch_calibration(lambda: self.planner.estimate, lambda: self.step.policy,
                                      lambda: self.response_margin_ms + self.lag_margin_ms)

    @property
    def policy(self) -> Policy:
        """The policy decisions are taken with now (rebuilt when calibration moves)."""
        return self.step.policy

    @property
    def _peak_rate_s(self) -> float:
        return self.step.peak_rate_s

    # --- start-up / shutdown -------------------------------------------------------------
    def attach(self, pool: WorkerPool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool, self._loop = pool, loop

    async def wait_warm(self, timeout_s: float) -> None:
        """Wait until every worker reported warm; raises if one died first."""
        try:
            await asyncio.wait_for(self._all_warm.wait(), timeout_s)
        except asyncio.TimeoutError:
            raise RuntimeError(f"workers not warm after {timeout_s:.0f} s") from None
        if self._failed_start:
            raise RuntimeError(self._failed_start)
        self.accepting = True

    async def check_profile(self, seconds: float | None = None) -> CheckReport | None:
        """The start-up check: run probe batches over a spread of SubNets and batch sizes on
        every worker for ``seconds`` (default: the calibration config's ``check_s``), feed
        the calibrator and install the policy rebuilt on what was measured. Call after
        :meth:`wait_warm` and before admitting traffic. None without a planner."""
        if self.planner is None:
            return None
        cfg = self.planner.config
        if seconds is not None:
            from dataclasses import replace
            cfg = replace(cfg, check_s=seconds)
        was_accepting, self.accepting = self.accepting, False
        self._check = ProfileCheck(self.info.profile, cfg, started=time.monotonic())
        self._check_done = self._loop.create_future()  # type: ignore[union-attr]
        self._probe()
        try:
            await asyncio.wait_for(asyncio.shield(self._check_done), max(10.0, 5 * cfg.check_s))
        except asyncio.TimeoutError:
            pass  # a worker hung or died: report what was measured
        chk, self._check = self._check, None
        now = time.monotonic()
        self.planner.refresh(now, force=True)
        self.step.set_policy(self.planner.policy)
        self.check_report = chk.report(self.planner.estimate, now)
        self.metrics.profile_checked(self.check_report)
        if self.events is not None:
            fields = self.check_report.to_dict()
            fields.pop("message")
            self.events.emit("profile_check", ("warning: " if self.check_report.warned else "")
                             + self.check_report.message, text=self.check_report.message, **fields)
        self.accepting = was_accepting
        self._schedule_refresh()
        self._pump()
        return self.check_report

    def _probe(self) -> None:
        """Keep every free worker busy with probe batches until the check is done."""
        chk = self._check
        if chk is None:
            return
        now = time.monotonic()
        while self._free and not chk.done(now):
            s, b = chk.next_probe()
            t = self.step.policy.table
            d = Decision(s, t.ids[s], b, t.latency_ms[s][b - 1] + self.step.policy.overhead_ms, t.accuracy[s])
            self._dispatch(self._free.popleft(), d, [], now, b)
        if chk.done(now) and len(self._free) == len(self._ready) and not self._check_done.done():  # type: ignore[union-attr]
            self._check_done.set_result(None)  # type: ignore[union-attr]

    def start_calibration(self) -> None:
        """Start the periodic refresh without a start-up check."""
        self._schedule_refresh()

    _LAG_TICK_S = 0.01

    def _lag_tick(self) -> None:
        now = time.monotonic()
        self._lags.append((now, max(0.0, (now - self._lag_due) * 1000.0)))
        if not self._stopped:
            self._lag_due = now + self._LAG_TICK_S
            self._lag_timer = self._loop.call_later(self._LAG_TICK_S, self._lag_tick)  # type: ignore[union-attr]

    def _update_lag_margin(self, now: float) -> None:
        window = self.planner.config.window_s if self.planner is not None else 3.0
        lags = sorted(v for t, v in self._lags if t >= now - window)
        self.lag_margin_ms = lags[min(len(lags) - 1, int(0.99 * len(lags)))] if len(lags) >= 20 else 0.0

    def _schedule_refresh(self) -> None:
        if self.planner is not None and self._loop is not None and self._refresh_timer is None:
            self._refresh_timer = self._loop.call_later(self.planner.config.refresh_s, self._recalibrate)
            if self._lag_timer is None and self.planner.enabled:
                self._lag_due = time.monotonic() + self._LAG_TICK_S
                self._lag_timer = self._loop.call_later(self._LAG_TICK_S, self._lag_tick)

    def _recalibrate(self) -> None:
        """Timer: recompute the host estimate; install a rebuilt policy when it moved."""
        self._refresh_timer = None
        planner = self.planner
        now = time.monotonic()
        try:
            if planner.enabled:  # type: ignore[union-attr]
                self._update_lag_margin(now)
            if planner.refresh(now):  # type: ignore[union-attr]
                self.step.set_policy(planner.policy)  # type: ignore[union-attr]
                self.metrics.policy_rebuilds.inc()
        except Exception as exc:  # a bug here must not stop serving: keep the last policy, say so
            if self.events is not None:
                self.events.emit("calibration_error", f"calibration refresh failed, planning goes on with the "
                                 f"last policy: {type(exc).__name__}: {exc}", error=str(exc))
        if self.events is not None and planner.history:  # type: ignore[union-attr]
            p = planner.history[-1]  # type: ignore[union-attr]
            if p.t == now:
                self.events.emit("calibration", speed=round(p.speed, 5), plan_speed=round(p.plan_speed, 5),
                                 mean_speed=round(p.mean_speed, 5), overhead_ms=round(p.overhead_ms, 4),
                                 overhead_p50_ms=round(p.overhead_p50_ms, 4),
                                 overhead_mean_ms=round(p.overhead_mean_ms, 4), speed_now=round(p.speed_now, 5),
                                 overhead_now_ms=round(p.overhead_now_ms, 4), samples=p.samples,
                                 rebuilt=p.rebuilt, lag_margin_ms=round(self.lag_margin_ms, 3))
            if len(planner.history) > 10_000:  # type: ignore[union-attr, arg-type]
                del planner.history[:5_000]  # type: ignore[union-attr]
        if not self._stopped:
            self._schedule_refresh()

    _stopped = False

    def calibration_info(self) -> dict:
        """The live estimate for the model's metadata."""
        if self.planner is None:
            return {"calibration": "off"}
        e = self.planner.estimate
        out = {"latency_speed_factor": round(e.speed, 4), "latency_overhead_ms": round(e.overhead_ms, 4),
               "latency_overhead_p50_ms": round(e.overhead_p50_ms, 4), "calibration_samples": e.samples,
               "policy_rebuilds": self.planner.rebuilds, "response_margin_ms": round(
                   self.response_margin_ms + self.lag_margin_ms, 3),
               "calibration": "on" if self.planner.enabled else "measuring only"}
        if self.check_report is not None:
            out["profile_check_speed_factor"] = round(self.check_report.speed, 4)
            out["profile_check"] = self.check_report.message
        return out

    @property
    def ready(self) -> bool:
        return self.accepting and bool(self._ready)

    def stop_intake(self) -> None:
        self.accepting = False
        self._stopped = True
        if self._refresh_timer is not None:
            self._refresh_timer.cancel()
            self._refresh_timer = None
        if self._lag_timer is not None:
            self._lag_timer.cancel()
            self._lag_timer = None

    async def drain(self, timeout_s: float) -> None:
        """Let queued and running requests finish (graceful shutdown), then answer what is
        left as unavailable."""
        end = time.monotonic() + timeout_s
        while (self.queue or any(w.state is WorkerState.BUSY for w in self.pool.workers)) \
                and time.monotonic() < end and self._ready:
            await asyncio.sleep(0.01)
        for r in self.queue.pop_earliest(len(self.queue)):
            self._answer(r, InferResult(Outcome.UNAVAILABLE, message="server shutting down"))

    # --- the request path ----------------------------------------------------------------
    async def infer(self, row: bytes, slo_ms: float, min_accuracy: float = 0.0) -> InferResult:
        if not self.accepting:
            self.metrics.by_outcome["unavailable"].inc()
            msg = "server is shutting down" if self._all_warm.is_set() else "workers are still warming up"
            return InferResult(Outcome.UNAVAILABLE, message=f"{msg}; retry later (see /v2/health/ready)")
        if not self._ready:
            self.metrics.by_outcome["unavailable"].inc()
            return InferResult(Outcome.UNAVAILABLE, message="no live worker; retry later")
        now = time.monotonic()
        margin = self.response_margin_ms + self.lag_margin_ms
        deadline = now + (slo_ms - (margin if margin < 0.25 * slo_ms else 0.25 * slo_ms)) / 1000.0
        fut = self._loop.create_future()  # type: ignore[union-attr]
        req = Request(next(self._ids), now, deadline, min_accuracy, Pending(row, fut, slo_ms))
        admitted = self.step.arrive(self.queue, req, now, len(self._ready))
        if admitted != ADMITTED:
            if admitted == SHED:
                self.metrics.by_outcome["shed"].inc()
                ahead = len(self.queue)
                wait_s = self.step.wait_bound_s(ahead, len(self._ready))
                return InferResult(Outcome.SHED, message=(
                    f"deadline cannot be met: {ahead} requests ahead need at least {wait_s * 1000:.1f} ms, "
                    f"slo_ms={(deadline - now) * 1000:g}; raise slo_ms or lower the load"))
            self.metrics.by_outcome["rejected"].inc()
            return InferResult(Outcome.REJECTED, message=(
                f"queue full ({self.queue.capacity} requests waiting); slow down or retry later"))
        if not self._pump_scheduled:
            # Coalesce: requests arriving in the same loop iteration are seen by one decision.
            self._pump_scheduled = True
            self._loop.call_soon(self._pump)  # type: ignore[union-attr]
        try:
            return await fut
        except asyncio.CancelledError:
            self.queue.remove(req)  # the client went away: free its slot
            raise

    def _answer(self, req: Request, result: InferResult) -> None:
        fut = req.payload.future  # type: ignore[union-attr]
        if not fut.done():
            fut.set_result(result)
        self.metrics.by_outcome[result.outcome.value].inc()

    def _shed(self, requests: list[Request], now: float) -> None:
        for r in requests:
            waited = (now - r.arrival) * 1000.0
            self._answer(r, InferResult(Outcome.SHED, queue_ms=waited, message=(
                f"deadline cannot be met: slo_ms={r.payload.slo_ms:g}, waited {waited:.1f} ms, "  # type: ignore[union-attr]
                f"fastest option needs {self.step.min_service_s * 1000:.1f} ms; "
                "raise slo_ms or lower the load")))

    def _pump(self) -> None:
        """Dispatch to free workers while there is work."""
        self._pump_scheduled = False
        queue, step = self.queue, self.step
        if not queue or self._check is not None:
            return
        now = time.monotonic()
        if not self._free:
            # No worker free: still answer the hopeless at once instead of at the next
            # completion (O(1) when nothing has expired).
            expired = step.expire(queue, now)
            if expired:
                self._shed(expired, now)
            return
        while self._free and queue:
            out = step.schedule(queue, now, len(self._ready))
            if out.shed:
                self._shed(out.shed, now)
            if out.decision is None:
                break
            self._dispatch(self._free.popleft(), out.decision, out.batch, now, len(out.batch))

    def _dispatch(self, w: WorkerHandle, decision: Decision, batch: list[Request], now: float, size: int) -> None:
        seq = next(self._seqs)
        # A worker that neither answers nor dies (a hang) would hold its batch forever:
        # past max(hang_timeout_s, 10 x the expected latency) it is killed, and the death
        # path re-queues or answers the batch.
        limit = max(self.hang_timeout_s, decision.expected_latency_ms / 100.0)
        w.inflight = Inflight(seq, decision, batch, now,
                              self._loop.call_later(limit, self._hung, w, seq), size)  # type: ignore[union-attr]
        self.pool.run(w, RunBatch(seq, decision.subnet_index, size),  # type: ignore[union-attr]
                      [r.payload.row for r in batch])  # type: ignore[union-attr]

    def _hung(self, w: WorkerHandle, seq: int) -> None:
        inflight: Inflight | None = w.inflight  # type: ignore[assignment]
        if inflight is not None and inflight.seq == seq:
            self.pool.kill(w)  # type: ignore[union-attr]

    @staticmethod
    def _take_inflight(w: WorkerHandle) -> "Inflight | None":
        inflight: Inflight | None = w.inflight  # type: ignore[assignment]
        w.inflight = None
        if inflight is not None and inflight.watchdog is not None:
            inflight.watchdog.cancel()
        return inflight

    # --- events from the pool (PoolListener) ---------------------------------------------
    def worker_ready(self, w: WorkerHandle) -> None:
        self._ready.add(w)
        self._free.append(w)
        if self.pool is not None and len(self._ready) == len(self.pool.workers):
            self._all_warm.set()
        if self._check is not None:
            self._probe()
        else:
            self._pump()

    def batch_done(self, w: WorkerHandle, msg: BatchDone) -> None:
        inflight = self._take_inflight(w)
        now = time.monotonic()
        if inflight is not None and inflight.seq == msg.seq and self.planner is not None:
            self.planner.observe(inflight.decision.subnet_index, inflight.size, msg.compute_ms,
                                 (now - inflight.dispatched) * 1000.0, now)
        if inflight is not None and inflight.seq == msg.seq and inflight.batch:
            d, batch = inflight.decision, inflight.batch
            out, ob = w.output_view, self._out_bytes
            n = len(batch)
            acc = self._accuracy[d.subnet_index]
            m = self.metrics
            m.observe_batch(d.subnet_id, acc, n, msg.compute_ms)
            in_time, late = m.by_outcome["in_time"], m.by_outcome["late"]
            for i, r in enumerate(batch):
                fut = r.payload.future  # type: ignore[union-attr]
                queue_ms = (inflight.dispatched - r.arrival) * 1000.0
                m.queue_ms.observe(queue_ms)
                m.accuracy.observe(acc)
                ok = now <= r.arrival + r.payload.slo_ms / 1000.0  # the caller's deadline, margin aside
                (in_time if ok else late).inc()
                if not fut.done():
                    fut.set_result(InferResult(
                        Outcome.IN_TIME if ok else Outcome.LATE, bytes(out[i * ob:(i + 1) * ob]),
                        d.subnet_id, acc, n, queue_ms, msg.compute_ms, w.index))
            self.completed += n
        self._free.append(w)
        if self._check is not None:
            self._probe()
        else:
            self._pump()

    def batch_failed(self, w: WorkerHandle, msg: BatchFailed) -> None:
        inflight = self._take_inflight(w)
        if inflight is not None:
            for r in inflight.batch:
                self._answer(r, InferResult(Outcome.ERROR, message=f"inference failed: {msg.message}"))
        self._free.append(w)
        if self._check is not None:
            self._probe()
        else:
            self._pump()

    def worker_died(self, w: WorkerHandle) -> None:
        """Forget the worker; re-queue its batch where deadlines still allow."""
        self.metrics.worker_deaths.inc()
        self._ready.discard(w)
        try:
            self._free.remove(w)
        except ValueError:
            pass
        if not self._all_warm.is_set():
            self._failed_start = (f"worker {w.index} died during start-up (exit code {w.exitcode}); "
                                  "run `superserve serve` in the foreground to see its error")
            self._all_warm.set()
        inflight = self._take_inflight(w)
        now = time.monotonic()
        if inflight is not None and inflight.batch:
            for r in self.step.requeue(self.queue, inflight.batch, now, len(self._ready)):
                self._answer(r, InferResult(Outcome.UNAVAILABLE, message=(
                    f"worker {w.index} died while running this request (exit code {w.exitcode}) "
                    "and its deadline left no time to retry; retry")))
        if not self._ready:
            for r in self.queue.pop_earliest(len(self.queue)):
                self._answer(r, InferResult(Outcome.UNAVAILABLE, message="no live worker left; retry later"))
        if self._check is not None:
            self._probe()
        else:
            self._pump()
