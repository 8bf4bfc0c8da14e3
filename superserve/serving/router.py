"""The router: deadlines, the global EDF queue, the policy, and results back to callers.

One asyncio loop. ``infer`` stamps an absolute deadline on ``time.monotonic()``, queues the
request and awaits its answer. Whenever a worker is free and the queue is not empty,
``_pump`` runs the scheduling step the simulator runs too
(:class:`~superserve.scheduling.step.SchedulingStep`: shed, decide, pop) and hands the batch
to that worker; arrivals go through the same step's admission. The router never looks inside a tensor: a
request's input is an opaque float32 row that the pool copies into the worker's slab.

Every request gets exactly one :class:`InferResult` with an explicit
:class:`~superserve.outcome.Outcome`: answered in time or late, shed (deadline cannot be met),
rejected (queue full), unavailable (not ready, shutting down, no live worker), error (the batch
failed) or floor unmet (a strict accuracy floor no SubNet can serve).

Calibration (superserve/scheduling/calibration.py): every finished batch feeds its compute
time and its dispatch-to-result time to a :class:`CalibratedPlanner`; a timer (never the
request path) refreshes the estimate and installs a policy rebuilt on the rescaled profile
when it moved. Before admitting traffic, :meth:`Router.check_profile` runs a few seconds of
probe batches so the first requests are planned on this host's speed.

The live dashboard reads :attr:`Router.activity` (superserve/serving/activity.py): one tuple
appended per answered batch, one record per second from a timer.
"""
from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Callable, NamedTuple, Protocol

from superserve.outcome import Outcome
from superserve.scheduling import EdfQueue, Request
from superserve.scheduling.calibration import CalibratedPlanner, CheckReport, ProfileCheck
from superserve.scheduling.policy import Decision, Policy
from superserve.scheduling.step import ADMITTED, SHED, SchedulingStep
from superserve.serving.activity import ActivityLog, Estimate, Totals
from superserve.serving.events import EventLog
from superserve.serving.messages import BatchDone, BatchFailed, RunBatch
from superserve.serving.metrics import ServingMetrics, observe_many, observe_same
from superserve.serving.model_info import ModelInfo
from superserve.serving.pool import WorkerHandle, WorkerRunner


class InferResult(NamedTuple):
    """One request's answer. A named tuple, not a frozen dataclass: as immutable, and built
    in a quarter of the time (0.27 vs 1.05 us; one per request on the scheduler's path)."""

    outcome: Outcome
    logits: bytes | None = None  # float32 little-endian, num_classes values
    subnet_id: str = ""
    accuracy: float = 0.0
    batch_size: int = 0
    queue_ms: float = 0.0
    compute_ms: float = 0.0
    worker: int = -1
    message: str = ""  # why, for every outcome but IN_TIME / LATE
    floor_met: bool = True  # the serving SubNet's accuracy >= the request's min_accuracy

    @property
    def ok(self) -> bool:
        return self.outcome.answered


class Arbiter(Protocol):
    """Who decides which model's router dispatches next when several share the workers
    (superserve/serving/multi.py)."""

    def pump(self) -> None: ...


class Origin(NamedTuple):
    """What the caller sent, for the logs when its request kills a worker."""

    request_id: object  # the protocol's request id, if the caller set one
    datatype: object
    shape: object


class Reply(Protocol):
    """Where a request's one answer goes: an ``asyncio.Future`` (:meth:`Router.infer`), or
    the front door's per-request record (:meth:`Router.submit`), which batches answers per
    front-end process instead of waking a coroutine per request."""

    def done(self) -> bool: ...
    def set_result(self, result: InferResult) -> None: ...


@dataclass(slots=True, eq=False)
class PendingRequest:
    """The router's record of one request from arrival to its one answer (Ray Serve's
    ``PendingRequest``): its input, the future its caller awaits, and what the router needs
    to judge and retry it. The scheduler carries it opaquely as ``Request.payload``."""

    row: bytes | memoryview  # the input, float32, validated by the API layer (dropped on cancel)
    future: asyncio.Future[InferResult] | Reply  # Reply: a front-door request (Router.submit)
    slo_ms: float
    strict: bool = False  # min_accuracy is a hard floor: meet it or answer FLOOR_UNMET
    origin: Origin | None = None
    deaths: int = 0  # workers that died while running it


def pending(r: Request) -> PendingRequest:
    """The router's record behind a request it queued."""
    p = r.payload
    assert isinstance(p, PendingRequest), "a request the router did not queue"
    return p


@dataclass(slots=True)
class InflightBatch:
    """A batch a worker is running: what was decided, for whom, since when."""

    seq: int
    decision: Decision
    batch: list[Request]  # empty for a probe batch of the profile check
    dispatched: float
    size: int  # rows the worker runs
    watchdog: asyncio.TimerHandle | None = None
    hung: bool = False  # the watchdog killed the worker: a suspect batch, like a crash


ACTIVITY_TICK_S = 1.0  # the dashboard's per-second records
MAX_SEQ = 0xFFFFFFFF  # RunBatch.seq travels as uint32; sequence numbers wrap to 1 after it
CRASHED_INPUT_TTL_S = 600.0  # how long an input that was running in a worker crash is remembered
CRASHED_INPUTS_MAX = 4096
_KILLED = (None, -signal.SIGKILL)  # exit codes of a worker killed from outside (operator, OOM killer)


async def wait_all_warm(event: asyncio.Event, timeout_s: float, failed: Callable[[], str | None]) -> None:
    """Wait for ``event`` (every worker warm); RuntimeError after ``timeout_s``, or with
    ``failed()``'s message when a worker died during start-up (a router's, or the ModelMux's
    of a server of several models)."""
    try:
        await asyncio.wait_for(event.wait(), timeout_s)
    except asyncio.TimeoutError:
        raise RuntimeError(f"workers not warm after {timeout_s:.0f} s") from None
    message = failed()
    if message:
        raise RuntimeError(message)


class Router:
    def __init__(self, info: ModelInfo, policy: Policy | CalibratedPlanner, metrics: ServingMetrics, *,
                 queue_capacity: int, pool: WorkerRunner | None = None,
                 loop: asyncio.AbstractEventLoop | None = None, late: str = "shed",
                 hang_timeout_s: float = 2.0, response_margin_ms: float = 0.0,
                 request_max_deaths: int = 2, events: EventLog | None = None) -> None:
        """``policy``: a fixed policy, or a :class:`CalibratedPlanner` whose policy follows
        the host's measured speed. ``pool`` and ``loop``: the workers and the event loop it
        serves on (a router without them can only be inspected). ``request_max_deaths``: a
        request whose worker died this many times is answered ERROR instead of re-run.
        ``events``: the server's lifecycle log (calibration points, requests that killed a
        worker)."""
        self.info = info
        self.planner = policy if isinstance(policy, CalibratedPlanner) else None
        first = policy.policy if isinstance(policy, CalibratedPlanner) else policy
        self.step = SchedulingStep(first, shedding=late == "shed")
        self.metrics = metrics
        self.events = events
        self.pool = pool
        self._loop = loop
        self.shedding = late == "shed"
        if request_max_deaths < 1:
            raise ValueError("request_max_deaths must be >= 1")
        self.request_max_deaths = request_max_deaths
        # Several SuperNets in one server (superserve/serving/multi.py): this router's model
        # is RunBatch.model ``model_index`` of the shared workers, and the ``arbiter`` decides
        # which model's router dispatches to a free worker next (None: this router alone).
        self.model_index = 0
        self.arbiter: Arbiter | None = None
        self.check_report: CheckReport | None = None
        self._check: ProfileCheck | None = None
        self._check_done: asyncio.Future[None] | None = None
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
        # Requests that run alone, outside the policy's batches: the batch of a worker that
        # crashed (one of them may be a poison input) and strict accuracy floors the batch's
        # SubNet missed. Few and short-lived; dispatched before the EDF queue when due first.
        self._solo: list[Request] = []
        self._inflight: dict[WorkerHandle, InflightBatch] = {}  # worker -> the batch it runs
        self._turn_s, self._turn_n = 0.0, 0  # result-to-next-dispatch time since the last calibration event
        # Inputs that were running when a worker crashed: hash(row) -> (deaths, until when). A
        # caller that retries one (a 503 when no time was left to re-run it) starts from its
        # count, so a poison input retried by its client still costs request_max_deaths
        # workers in all, and is refused without a run once it has. Empty in normal running.
        self._crashed_inputs: dict[int, tuple[int, float]] = {}
        self._free: deque[WorkerHandle] = deque()
        self._ids = itertools.count()
        self._seq = 0
        self._pump_scheduled = False
        self.accepting = False  # set once every worker is warm; cleared at shutdown
        self._stopped = False
        self._all_warm = asyncio.Event()
        self._failed_start: str | None = None
        self.completed = 0
        self._ready: set[WorkerHandle] = set()  # warm and alive; kept by events, no scan per request
        # Workers of the bundle a hot reload replaced: they finish (and answer) the batch they
        # run at the switch, get no new one, and are stopped once idle (see :meth:`swap_bundle`).
        self._retired: set[WorkerHandle] = set()
        self._retired_idle: asyncio.Event | None = None
        acc = {s.id: s.accuracy for s in info.profile.subnets}
        self._accuracy = [acc[sid] for sid in info.subnet_ids]
        # The dashboard's rings (serving/activity.py): one tuple per answered batch, one
        # record per second from a timer; ``arrivals`` counts every call of :meth:`infer`.
        self.activity = ActivityLog(self._accuracy)
        self.arrivals = 0
        self._activity_timer: asyncio.TimerHandle | None = None
        t = self.step.policy.table
        self._best_accuracy = max(t.accuracy[s] for s in self.step.policy.allowed_subnets())
        self._out_bytes = info.output_bytes
        metrics.watch(lambda: len(self.queue) + len(self._solo), lambda: len(self._ready),
                      lambda: self.pool.num_alive if self.pool is not None else 0)
        if self.planner is not None:
            planner = self.planner
            metrics.watch_calibration(lambda: planner.estimate, lambda: self.step.policy,
                                      lambda: self.response_margin_ms + self.lag_margin_ms)

    @property
    def policy(self) -> Policy:
        """The policy decisions are taken with now (rebuilt when calibration moves)."""
        return self.step.policy

    @property
    def _peak_rate_s(self) -> float:
        return self.step.peak_rate_s

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("this router has no event loop: construct it with Router(..., loop=...)")
        return self._loop

    def in_flight(self, w: WorkerHandle) -> InflightBatch | None:
        """The batch worker ``w`` is running (None: idle, starting or dead)."""
        return self._inflight.get(w)

    # --- start-up / shutdown -------------------------------------------------------------
    async def wait_warm(self, timeout_s: float) -> None:
        """Wait until every worker reported warm; raises if one died first."""
        await wait_all_warm(self._all_warm, timeout_s, lambda: self._failed_start)
        self.accepting = True

    async def check_profile(self, seconds: float | None = None) -> CheckReport | None:
        """The start-up check: run probe batches over a spread of SubNets and batch sizes on
        every worker for ``seconds`` (default: the calibration config's ``check_s``), feed
        the calibrator and install the policy rebuilt on what was measured. Call after
        :meth:`wait_warm` and before admitting traffic. None without a planner."""
        planner = self.planner
        if planner is None:
            return None
        cfg = planner.config if seconds is None else replace(planner.config, check_s=seconds)
        was_accepting, self.accepting = self.accepting, False
        chk = self._check = ProfileCheck(self.info.profile, cfg, started=time.monotonic())
        done = self._check_done = self.loop.create_future()
        self._probe()
        try:
            await asyncio.wait_for(asyncio.shield(done), max(10.0, 5 * cfg.check_s))
        except asyncio.TimeoutError:
            pass  # a worker hung or died: report what was measured
        self._check = None
        now = time.monotonic()
        planner.refresh(now, force=True)
        self.step.set_policy(planner.policy)
        report = self.check_report = chk.report(planner.estimate, now)
        self.metrics.profile_checked(report)
        if self.events is not None:
            fields = report.to_dict()
            fields.pop("message")
            self.events.emit("profile_check", ("warning: " if report.warned else "") + report.message,
                             text=report.message, plan=_plan_fields(planner), **fields)
        self.accepting = was_accepting
        self._schedule_refresh()
        self._pump()
        return report

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
        done = self._check_done
        if chk.done(now) and len(self._free) == len(self._ready) and done is not None and not done.done():
            done.set_result(None)

    def start_calibration(self) -> None:
        """Start the periodic refresh without a start-up check."""
        self._schedule_refresh()

    _LAG_TICK_S = 0.01

    def _lag_tick(self) -> None:
        now = time.monotonic()
        self._lags.append((now, max(0.0, (now - self._lag_due) * 1000.0)))
        if not self._stopped:
            self._lag_due = now + self._LAG_TICK_S
            self._lag_timer = self.loop.call_later(self._LAG_TICK_S, self._lag_tick)

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
        if planner is None:
            return
        now = time.monotonic()
        try:
            if planner.enabled:
                self._update_lag_margin(now)
            if planner.refresh(now):
                self.step.set_policy(planner.policy)
                self.metrics.policy_rebuilds.inc()
        except Exception as exc:  # a bug here must not stop serving: keep the last policy, say so
            if self.events is not None:
                self.events.emit("calibration_error", f"calibration refresh failed, planning goes on with the "
                                 f"last policy: {type(exc).__name__}: {exc}", error=str(exc))
        history = planner.history
        if self.events is not None and history:
            p = history[-1]
            if p.t == now:
                self.events.emit("calibration", speed=round(p.speed, 5), plan_speed=round(p.plan_speed, 5),
                                 mean_speed=round(p.mean_speed, 5), overhead_ms=round(p.overhead_ms, 4),
                                 overhead_p50_ms=round(p.overhead_p50_ms, 4),
                                 overhead_mean_ms=round(p.overhead_mean_ms, 4), speed_now=round(p.speed_now, 5),
                                 overhead_now_ms=round(p.overhead_now_ms, 4), samples=p.samples,
                                 rebuilt=p.rebuilt, lag_margin_ms=round(self.lag_margin_ms, 3),
                                 turnaround_now_ms=round(1000.0 * self._turn_s / self._turn_n, 4)
                                 if self._turn_n else 0.0,
                                 noise=round(planner.estimate.noise, 4),
                                 batch_corrections=[round(x, 4) for x in planner.estimate.batch_corrections],
                                 **({"plan": _plan_fields(planner)} if p.rebuilt else {}))
                self._turn_s, self._turn_n = 0.0, 0
            if len(history) > 10_000:
                del history[:5_000]
        if not self._stopped:
            self._schedule_refresh()

    def start_activity_log(self) -> None:
        """Start the once-a-second records of :attr:`activity` (the server calls this)."""
        if self._activity_timer is None and not self._stopped:
            self._activity_timer = self.loop.call_later(ACTIVITY_TICK_S, self._activity_tick)

    def _activity_tick(self) -> None:
        self._activity_timer = None
        self.close_activity_second(time.monotonic())
        self.start_activity_log()

    def close_activity_second(self, now: float) -> tuple:
        """Append the per-second record that ends at ``now`` to :attr:`activity`."""
        e = self.planner.estimate if self.planner is not None else None
        estimate = (Estimate(e.speed, e.overhead_ms, self.response_margin_ms + self.lag_margin_ms)
                    if e is not None else Estimate(margin_ms=self.response_margin_ms))
        return self.activity.close_second(now, Totals(self.arrivals, self.metrics.outcome_totals()),
                                          len(self.queue) + len(self._solo), estimate)

    def calibration_info(self) -> dict[str, object]:
        """The live estimate for the model's metadata."""
        if self.planner is None:
            return {"calibration": "off"}
        e = self.planner.estimate
        out: dict[str, object] = {
            "latency_speed_factor": round(e.speed, 4), "latency_overhead_ms": round(e.overhead_ms, 4),
            "latency_overhead_p50_ms": round(e.overhead_p50_ms, 4), "calibration_samples": e.samples,
            "policy_rebuilds": self.planner.rebuilds,
            "response_margin_ms": round(self.response_margin_ms + self.lag_margin_ms, 3),
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
        if self._activity_timer is not None:
            self._activity_timer.cancel()
            self._activity_timer = None

    async def drain(self, timeout_s: float) -> None:
        """Let queued and running requests finish (graceful shutdown), then answer what is
        left as unavailable."""
        end = time.monotonic() + timeout_s
        while (self.queue or self._solo or self._inflight) and time.monotonic() < end and self._ready:
            await asyncio.sleep(0.01)
        self._answer_all(InferResult(Outcome.UNAVAILABLE, message="server shutting down"))

    def _answer_all(self, result: InferResult) -> None:
        """Answer every waiting request (queued or solo) with ``result``."""
        solo, self._solo = self._solo, []
        for r in self.queue.pop_earliest(len(self.queue)) + solo:
            self._answer(r, result)

    # --- the request path ----------------------------------------------------------------
    async def infer(self, row: bytes, slo_ms: float, min_accuracy: float = 0.0, *, strict: bool = False,
                    origin: Origin | None = None) -> InferResult:
        """Queue one request and await its answer. ``strict``: ``min_accuracy`` is a hard
        floor (served by a SubNet meeting it, or answered FLOOR_UNMET), not best effort.
        ``origin``: what the caller sent, named in the logs if this input kills a worker."""
        loop = self._loop
        assert loop is not None, "Router(..., loop=...) serves requests"
        fut: asyncio.Future[InferResult] = loop.create_future()
        req = self.submit(row, slo_ms, min_accuracy, strict, fut, origin=origin)
        if req is None:  # answered at once (refused, shed, poison)
            return fut.result()
        try:
            return await fut
        except asyncio.CancelledError:
            self._cancelled(req, pending(req))
            raise

    def submit(self, row: bytes | memoryview, slo_ms: float, min_accuracy: float, strict: bool, reply: Reply,
               arrival: float | None = None, origin: Origin | None = None) -> Request | None:
        """Queue one request without a coroutine: ``reply.set_result`` is called exactly once
        with its :class:`InferResult` (``reply.done()`` True from then on, or once its caller
        went away). :meth:`infer` passes a future; the front door's IPC intake
        (superserve/serving/frontdoor.py) its per-request record. ``arrival``: when a front
        end received it (``time.monotonic()``, system-wide), the start of its deadline (None:
        now). Returns the queued request (for :meth:`cancel`), or None when it was answered
        at once (refused: not accepting, no worker, queue full, shed, floor, poison input)."""
        self.arrivals += 1
        now = time.monotonic()
        result = None
        if not self.accepting:
            msg = "server is shutting down" if self._all_warm.is_set() else "workers are still warming up"
            result = InferResult(Outcome.UNAVAILABLE, message=f"{msg}; retry later (see /v2/health/ready)")
        elif not self._ready:
            result = InferResult(Outcome.UNAVAILABLE, message="no live worker; retry later")
        elif strict and min_accuracy > self._best_accuracy:
            result = InferResult(Outcome.FLOOR_UNMET, message=(
                f"no served SubNet reaches min_accuracy={min_accuracy:g} (the most accurate has "
                f"{self._best_accuracy:g}); lower min_accuracy or drop min_accuracy_strict"))
        if result is not None:
            self._answer_reply(reply, result)
            return None
        start = arrival if arrival is not None and arrival <= now else now
        margin = self.response_margin_ms + self.lag_margin_ms
        deadline = start + (slo_ms - (margin if margin < 0.25 * slo_ms else 0.25 * slo_ms)) / 1000.0
        record = PendingRequest(row, reply, slo_ms, strict, origin)
        if self._crashed_inputs:  # only in the minutes after a worker crashed
            record.deaths = self._crash_count(row, now)
            if record.deaths >= self.request_max_deaths:
                self.metrics.poison.inc()
                self._answer_reply(reply, InferResult(Outcome.ERROR, message=(
                    f"this input crashed {record.deaths} workers in the last {CRASHED_INPUT_TTL_S / 60:g} "
                    "minutes (see the server log); it is not run again")))
                return None
        req = Request(next(self._ids), start, deadline, min_accuracy, record)
        admitted = self.step.arrive(self.queue, req, now, len(self._ready))
        if admitted != ADMITTED:
            if admitted == SHED:
                ahead = len(self.queue)
                wait_s = self.step.wait_bound_s(ahead, len(self._ready))
                result = InferResult(Outcome.SHED, message=(
                    f"deadline cannot be met: {ahead} requests ahead need at least {wait_s * 1000:.1f} ms, "
                    f"slo_ms={(deadline - now) * 1000:g}; raise slo_ms or lower the load"))
            else:
                result = InferResult(Outcome.REJECTED, message=(
                    f"queue full ({self.queue.capacity} requests waiting); slow down or retry later"))
            self._answer_reply(reply, result)
            return None
        if not self._pump_scheduled:
            # Coalesce: requests arriving in the same loop iteration are seen by one decision.
            self._pump_scheduled = True
            self.loop.call_soon(self._pump)
        return req

    def cancel(self, req: Request) -> None:
        """A request queued by :meth:`submit` whose caller went away (its HTTP client, or its
        whole front-end process): free its queue slot now; an answer it still gets is dropped."""
        self._cancelled(req, pending(req))

    def _answer_reply(self, reply: Reply, result: InferResult) -> None:
        self.metrics.by_outcome[result.outcome].inc()
        reply.set_result(result)

    def _cancelled(self, req: Request, record: PendingRequest) -> None:
        """The caller went away: free its queue slot and its input now, not at its deadline."""
        if not self.queue.remove(req):
            try:
                self._solo.remove(req)
            except ValueError:
                pass  # running (its answer is dropped) or already answered
        record.row = b""
        self.metrics.cancelled.inc()

    def _answer(self, req: Request, result: InferResult) -> None:
        fut = pending(req).future
        if not fut.done():
            fut.set_result(result)
        self.metrics.by_outcome[result.outcome].inc()

    def _shed(self, requests: list[Request], now: float) -> None:
        for r in requests:
            waited = (now - r.arrival) * 1000.0
            self._answer(r, InferResult(Outcome.SHED, queue_ms=waited, message=(
                f"deadline cannot be met: slo_ms={pending(r).slo_ms:g}, waited {waited:.1f} ms, "
                f"fastest option needs {self.step.min_service_s * 1000:.1f} ms; "
                "raise slo_ms or lower the load")))

    def _pump(self) -> None:
        """Dispatch to free workers while there is work."""
        self._pump_scheduled = False
        if self.arbiter is not None:  # workers shared with other models: the arbiter takes turns
            self.arbiter.pump()
            return
        self.dispatch_some()

    @property
    def head_deadline(self) -> float:
        """The earliest deadline waiting here (queued or solo); inf when nothing waits."""
        head = self.queue.earliest_deadline if self.queue else float("inf")
        for r in self._solo:
            head = min(head, r.deadline)
        return head

    def dispatch_some(self, limit: int = 0) -> None:
        """Dispatch this router's work to free workers: at most ``limit`` batches (0: while
        there is work and a free worker), shedding the hopeless on the way."""
        queue, step = self.queue, self.step
        if not (queue or self._solo) or self._check is not None:
            return
        now = time.monotonic()
        if not self._free:
            # No worker free: still answer the hopeless at once instead of at the next
            # completion (O(1) when nothing has expired).
            expired = step.expire(queue, now)
            if expired:
                self._shed(expired, now)
            return
        stop_at = len(self._free) - limit if limit > 0 else 0
        while len(self._free) > stop_at and (queue or self._solo):
            if self._solo and self._solo_due(queue):
                self._run_solo(now)
                continue
            floors = queue.has_accuracy_floors
            out = step.schedule(queue, now, len(self._ready))
            if out.shed:
                self._shed(out.shed, now)
            if out.decision is None:
                continue
            batch = self._strict_misfits_out(out.decision, out.batch) if floors else out.batch
            if batch:
                self._dispatch(self._free.popleft(), out.decision, batch, now, len(batch))

    def _solo_due(self, queue: EdfQueue) -> bool:
        """Run a solo request next: the queue is empty or due no earlier."""
        self._solo.sort(key=lambda r: r.deadline, reverse=True)  # earliest last: pop() takes it
        return not queue or self._solo[-1].deadline <= queue.earliest_deadline

    def _strict_misfits_out(self, d: Decision, batch: list[Request]) -> list[Request]:
        """Take out of ``batch`` the strict requests whose floor its SubNet misses: they run
        alone on a SubNet that meets it (or are answered FLOOR_UNMET). The rest run."""
        acc = d.accuracy
        if all(r.min_accuracy <= acc or not pending(r).strict for r in batch):
            return batch
        keep: list[Request] = []
        for r in batch:
            (self._solo if r.min_accuracy > acc and pending(r).strict else keep).append(r)
        return keep

    def _run_solo(self, now: float) -> None:
        r = self._solo.pop()
        p = pending(r)
        d = self._solo_decision(r, p, now)
        if d is not None:
            self._dispatch(self._free.popleft(), d, [r], now, 1)
        elif p.strict and r.min_accuracy > 0.0:
            self._answer(r, InferResult(Outcome.FLOOR_UNMET, queue_ms=(now - r.arrival) * 1000.0, message=(
                f"no SubNet with accuracy >= min_accuracy={r.min_accuracy:g} can finish in the "
                f"{max(0.0, (r.deadline - now) * 1000):.1f} ms left of its deadline; raise slo_ms, lower "
                "min_accuracy or drop min_accuracy_strict")))
        else:
            self._answer(r, InferResult(Outcome.UNAVAILABLE, message=(
                "a worker died while running this request and its deadline left no time to retry; retry")))

    def _solo_decision(self, r: Request, p: PendingRequest, now: float) -> Decision | None:
        """The SubNet for a request run alone: the policy's choice at batch 1 for its own
        slack, meeting its floor where one does (always, when strict); None: nothing fits."""
        policy = self.step.policy
        slack_ms = (r.deadline - now) * 1000.0 - policy.overhead_ms + 1e-6
        floor = r.min_accuracy
        d = policy.choose_with_floor(slack_ms, 1, floor) if floor > 0.0 else None
        if d is None and p.strict and floor > 0.0:
            return None
        if d is None:
            d = policy.choose(slack_ms, 1)
        if d is None and not self.shedding:  # serve late rather than not at all
            t, s = policy.table, policy.fallback_subnet
            d = Decision(s, t.ids[s], 1, t.latency_ms[s][0] + policy.overhead_ms, t.accuracy[s], True)
        return d

    def _next_seq(self) -> int:
        self._seq = self._seq + 1 if self._seq < MAX_SEQ else 1
        return self._seq

    def _dispatch(self, w: WorkerHandle, decision: Decision, batch: list[Request], now: float, size: int) -> None:
        pool = self.pool
        assert pool is not None and self._loop is not None, "Router(..., pool=..., loop=...) dispatches"
        seq = self._next_seq()
        # A worker that neither answers nor dies (a hang) would hold its batch forever:
        # past max(hang_timeout_s, 10 x the expected latency) it is killed, and the death
        # path re-queues or answers the batch.
        limit = max(self.hang_timeout_s, decision.expected_latency_ms / 100.0)
        self._inflight[w] = InflightBatch(seq, decision, batch, now, size,
                                          self._loop.call_later(limit, self._hung, w, seq))
        pool.run(w, RunBatch(seq, decision.subnet_index, size, self.model_index), [pending(r).row for r in batch])

    def _hung(self, w: WorkerHandle, seq: int) -> None:
        inflight = self._inflight.get(w)
        if inflight is not None and inflight.seq == seq and self.pool is not None:
            inflight.hung = True
            self.pool.kill(w)

    def _take_inflight(self, w: WorkerHandle) -> InflightBatch | None:
        inflight = self._inflight.pop(w, None)
        if inflight is not None and inflight.watchdog is not None:
            inflight.watchdog.cancel()
        return inflight

    def _next(self) -> None:
        if self._check is not None:
            self._probe()
        else:
            self._pump()

    # --- events from the pool (PoolListener) ---------------------------------------------
    def worker_ready(self, w: WorkerHandle) -> None:
        self._ready.add(w)
        self._free.append(w)
        if self.pool is not None and len(self._ready) == len(self.pool.workers):
            self._all_warm.set()
        self._next()

    def batch_done(self, w: WorkerHandle, msg: BatchDone) -> None:
        inflight = self._take_inflight(w)
        now = time.monotonic()
        if w in self._retired:
            if inflight is not None and inflight.seq == msg.seq and inflight.batch:
                self._answer_batch(w, inflight, msg.compute_ms, now)
            self._retire_check()
            return
        if inflight is not None and inflight.seq == msg.seq:
            if self.planner is not None:
                self.planner.observe(inflight.decision.subnet_index, inflight.size, msg.compute_ms,
                                     (now - inflight.dispatched) * 1000.0, now)
            if inflight.batch:
                self._answer_batch(w, inflight, msg.compute_ms, now)
        self._free.append(w)
        self._next()
        # Turnaround: a worker re-dispatched at once idles from its result until its next batch
        # is on the way (answering, planning, dispatching); averaged over all batches, the
        # simulated twin replays it as part of each batch's overhead.
        self._turn_n += 1
        nxt = self._inflight.get(w)
        if nxt is not None and nxt.dispatched >= now:
            self._turn_s += time.monotonic() - now

    def _answer_batch(self, w: WorkerHandle, inflight: InflightBatch, compute_ms: float, now: float) -> None:
        d, batch = inflight.decision, inflight.batch
        out, ob = w.output_view, self._out_bytes
        n = len(batch)
        retired = w in self._retired  # a batch of the bundle a reload replaced: its own SubNet indices
        acc = d.accuracy if retired else self._accuracy[d.subnet_index]
        m = self.metrics
        m.observe_batch(d.subnet_id, acc, n, compute_ms)
        ok_count = 0
        queued: list[float] = []  # per request; observed per batch (metrics.observe_many)
        # The per-request loop is the scheduler's hottest (docs/frontdoor.md): names hoisted,
        # the logits copied out of the slab once, the answer built positionally.
        logits = bytes(out[:n * ob])
        dispatched, sid, widx, crashed = inflight.dispatched, d.subnet_id, w.index, self._crashed_inputs
        in_time, late = Outcome.IN_TIME, Outcome.LATE
        lo = 0
        for r in batch:
            p = r.payload
            assert isinstance(p, PendingRequest)
            arrival = r.arrival
            queue_ms = (dispatched - arrival) * 1000.0
            queued.append(queue_ms)
            ok = now <= arrival + p.slo_ms / 1000.0  # the caller's deadline, margin aside
            ok_count += ok
            if p.deaths and crashed:  # it ran fine after all: not a poison input
                crashed.pop(hash(p.row), None)
            fut = p.future
            if not fut.done():
                fut.set_result(InferResult(in_time if ok else late, logits[lo:lo + ob], sid, acc, n, queue_ms,
                                           compute_ms, widx, "", acc >= r.min_accuracy))
            lo += ob
        observe_many(m.queue_ms, queued)
        observe_same(m.accuracy, acc, n)
        if ok_count:
            m.by_outcome[Outcome.IN_TIME].inc(ok_count)
        if ok_count < n:
            m.by_outcome[Outcome.LATE].inc(n - ok_count)
        self.completed += n
        if retired:
            return
        log = self.activity
        log.batches.append((next(log.seq), now, d.subnet_index, n, ok_count, compute_ms, w.index,
                            len(self.queue)))

    def batch_failed(self, w: WorkerHandle, msg: BatchFailed) -> None:
        inflight = self._take_inflight(w)
        if inflight is not None:
            for r in inflight.batch:
                self._answer(r, InferResult(Outcome.ERROR, message=f"inference failed: {msg.message}"))
        if w in self._retired:
            self._retire_check()
            return
        self._free.append(w)
        self._next()

    def worker_died(self, w: WorkerHandle) -> None:
        """Forget the worker; re-run its batch where deadlines (and its requests' deaths) allow."""
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
        if inflight is not None and inflight.batch:
            self._rerun_after_death(w, inflight, time.monotonic())
        if not self._ready:
            self._answer_all(InferResult(Outcome.UNAVAILABLE, message="no live worker left; retry later"))
        if w in self._retired:
            self._retire_check()
        self._next()

    # --- scaling (superserve/serving/scaling.py) -----------------------------------------
    def retire_workers(self, ws: list[WorkerHandle]) -> None:
        """Scaling down: dispatch nothing more to ``ws``. A batch one of them runs finishes
        and is answered (or re-queued if it dies), as for a hot reload's old workers; await
        :meth:`wait_retired` before stopping them. Policies plan with the workers left."""
        for w in ws:
            self._ready.discard(w)
            try:
                self._free.remove(w)
            except ValueError:
                pass
            if w in self._inflight:
                self._retired.add(w)
        if not self._ready:
            self._answer_all(InferResult(Outcome.UNAVAILABLE, message="no live worker left; retry later"))

    # --- hot reload ----------------------------------------------------------------------
    def swap_bundle(self, info: ModelInfo, planner: Policy | CalibratedPlanner,
                    pool: WorkerRunner) -> list[WorkerHandle]:
        """Switch to a new bundle's warm workers, in one step on the loop (nothing else runs
        in between): from now on batches are decided by ``planner``'s policy over the new
        SubNets and go to ``pool``'s workers; queued and solo requests (no SubNet chosen yet)
        are served by them. The old workers are retired: a batch one of them runs finishes
        and is answered as usual, and none gets another. Returns the retired workers (stop
        them once :meth:`wait_retired` returns). The new workers must all be warm (idle)."""
        old = self.pool
        retired = list(old.workers) if old is not None else []
        self._retired.update(retired)
        self._ready = {w for w in pool.workers if w.alive}
        self._free = deque(w for w in pool.workers if w.alive)
        self.pool = pool
        self.info = info
        self.planner = planner if isinstance(planner, CalibratedPlanner) else None
        self.step.set_policy(planner.policy if isinstance(planner, CalibratedPlanner) else planner)
        acc = {s.id: s.accuracy for s in info.profile.subnets}
        self._accuracy = [acc[sid] for sid in info.subnet_ids]
        self.activity = ActivityLog(self._accuracy)
        t = self.step.policy.table
        self._best_accuracy = max(t.accuracy[s] for s in self.step.policy.allowed_subnets())
        self._out_bytes = info.output_bytes
        self.metrics.add_subnets(acc)
        if isinstance(planner, CalibratedPlanner):
            self.metrics.watch_calibration(lambda: planner.estimate, lambda: self.step.policy,
                                           lambda: self.response_margin_ms + self.lag_margin_ms)
        self._turn_s, self._turn_n = 0.0, 0
        self._retire_check()
        if not self._pump_scheduled and self._loop is not None:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump)
        return retired

    def _retire_check(self) -> None:
        """Forget retired workers that hold no batch any more; wake :meth:`wait_retired`."""
        for w in [w for w in self._retired if w not in self._inflight]:
            self._retired.discard(w)
        if not self._retired and self._retired_idle is not None:
            self._retired_idle.set()

    async def wait_retired(self, timeout_s: float) -> bool:
        """Wait until no retired worker runs a batch (True), or ``timeout_s`` (False)."""
        self._retire_check()
        if not self._retired:
            return True
        self._retired_idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._retired_idle.wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            self._retired_idle = None

    def _rerun_after_death(self, w: WorkerHandle, inflight: InflightBatch, now: float) -> None:
        """The batch of a dead worker. Killed from outside (operator, OOM killer): its requests
        go back to the queue as they were. Crashed or hung: one of them may be a poison input,
        so each re-runs alone, and a request whose worker died ``request_max_deaths`` times is
        answered ERROR instead: one bad input costs at most that many workers, not all."""
        batch = [r for r in inflight.batch if not pending(r).future.done()]  # not cancelled
        suspect = inflight.hung or w.exitcode not in _KILLED
        poisoned: list[Request] = []
        again: list[Request] = []
        for r in batch:
            p = pending(r)
            p.deaths += 1
            if suspect:
                self._remember_crash(p, now)
            (poisoned if p.deaths >= self.request_max_deaths else again).append(r)
        if suspect or poisoned:
            self._log_lost_batch(w, inflight, batch, suspect)
        for r in poisoned:
            self._poisoned(w, r)
        if suspect:
            self._solo.extend(again)
            return
        for r in self.step.requeue(self.queue, again, now, len(self._ready)):
            self._answer(r, InferResult(Outcome.UNAVAILABLE, message=(
                f"worker {w.index} died while running this request (exit code {w.exitcode}) "
                "and its deadline left no time to retry; retry")))

    def _crash_count(self, row: bytes | memoryview, now: float) -> int:
        """Worker deaths an identical input was recently part of (0: none known)."""
        known = self._crashed_inputs.get(hash(row))
        if known is None:
            return 0
        if known[1] < now:
            del self._crashed_inputs[hash(row)]
            return 0
        return known[0]

    def _remember_crash(self, p: PendingRequest, now: float) -> None:
        if not p.row:
            return
        crashed = self._crashed_inputs
        if len(crashed) >= CRASHED_INPUTS_MAX:  # bounded: forget the oldest
            del crashed[next(iter(crashed))]
        key = hash(p.row)
        crashed.pop(key, None)  # re-insert: newest last
        crashed[key] = (p.deaths, now + CRASHED_INPUT_TTL_S)

    def _poisoned(self, w: WorkerHandle, r: Request) -> None:
        p = pending(r)
        self.metrics.poison.inc()
        self._answer(r, InferResult(Outcome.ERROR, message=(
            f"worker died {_times(p.deaths)} running this request (last: worker {w.index}, exit code "
            f"{w.exitcode}); this input may crash the model, so it is not run again")))
        if self.events is not None:
            self.events.emit("poison_request", f"request {_describe(r)} was running on {p.deaths} workers that "
                             f"died (last: worker {w.index}, exit code {w.exitcode}); answered 500, not retried",
                             worker=w.index, exitcode=w.exitcode, **_fields(r))

    def _log_lost_batch(self, w: WorkerHandle, inflight: InflightBatch, batch: list[Request],
                        suspect: bool) -> None:
        if self.events is None:
            return
        why = "hung" if inflight.hung else f"exit code {w.exitcode}"
        alone = len(inflight.batch) == 1
        self.events.emit(
            "worker_died_running", f"worker {w.index} died ({why}) running "
            + (f"request {_describe(batch[0])}" if alone and batch else
               f"a batch of {len(inflight.batch)} ({', '.join(_describe(r) for r in batch[:4])}"
               f"{', ...' if len(batch) > 4 else ''})")
            + ("; they re-run one by one" if suspect and not alone else ""),
            worker=w.index, exitcode=w.exitcode, hung=inflight.hung, subnet_id=inflight.decision.subnet_id,
            batch_size=len(inflight.batch), requests=[_fields(r) for r in batch[:16]])


def _plan_fields(planner: CalibratedPlanner) -> dict[str, object]:
    """The estimate the installed policy was built from, for the event log (a replay of this
    router's beliefs rebuilds the same policy from it)."""
    return {k: ([round(x, 6) for x in v] if isinstance(v, list) else round(v, 6))
            for k, v in planner.built.plan_dict().items()}


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _fields(r: Request) -> dict[str, object]:
    """A request as the event log names it (JSON-safe)."""
    o = pending(r).origin
    out: dict[str, object] = {"request": r.id, "deaths": pending(r).deaths, "min_accuracy": r.min_accuracy}
    if o is not None:
        out.update(id=o.request_id[:256] if isinstance(o.request_id, str) else None,
                   datatype=str(o.datatype), shape=[d for d in o.shape if isinstance(d, int)]
                   if isinstance(o.shape, (list, tuple)) else None)
    return out


def _describe(r: Request) -> str:
    f = _fields(r)
    text = f"#{r.id}"
    if f.get("id"):
        text += f" id={str(f['id'])[:64]!r}"
    if f.get("shape") is not None:
        text += f" {f.get('datatype')}{f['shape']}"
    return text
