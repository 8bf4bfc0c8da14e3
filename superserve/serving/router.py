"""The router: deadlines, the global EDF queue, the policy, and results back to callers.

One asyncio loop. ``infer`` stamps an absolute deadline on ``time.monotonic()``, queues the
request and awaits its answer. Whenever a worker is free and the queue is not empty,
``_pump`` asks the policy (the same object the simulator uses) for a (SubNet, batch)
decision and hands the batch to that worker. The router never looks inside a tensor: a
request's input is an opaque float32 row that the pool copies into the worker's slab.

Every request gets exactly one :class:`InferResult` with an explicit :class:`Outcome`:
answered in time or late, shed (deadline cannot be met), rejected (queue full),
unavailable (not ready, shutting down, no live worker) or error (the batch failed).
"""
from __future__ import annotations

import asyncio
import enum
import itertools
import time
from collections import deque
from dataclasses import dataclass

from superserve.scheduling import EdfQueue, Request, take_batch
from superserve.scheduling.policy import Decision, Policy
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
    batch: list[Request]
    dispatched: float
    watchdog: asyncio.TimerHandle | None = None


class Router:
    def __init__(self, info: ModelInfo, policy: Policy, metrics: ServingMetrics, *,
                 queue_capacity: int, late: str = "shed", hang_timeout_s: float = 2.0,
                 response_margin_ms: float = 0.0) -> None:
        self.info = info
        self.policy = policy
        self.metrics = metrics
        self.shedding = late == "shed"
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
        # Admission: the most requests per second one worker can finish (fastest SubNet, best
        # batch, as the policy plans), to tell at arrival that a deadline cannot be met.
        t, fast = policy.table, policy.fallback_subnet
        self._peak_rate_s = max((b + 1) / ((t.latency_ms[fast][b] + policy.overhead_ms) / 1000.0)
                                for b in range(t.max_batch))
        self._latest_deadline = 0.0  # >= every queued deadline (stale-high after removals: safe)
        acc = {s.id: s.accuracy for s in info.profile.subnets}
        self._accuracy = [acc[sid] for sid in info.subnet_ids]
        self._out_bytes = info.output_bytes
        metrics.watch(lambda: len(self.queue), lambda: len(self._ready),
                      lambda: self.pool.num_alive if self.pool else 0)

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

    @property
    def ready(self) -> bool:
        return self.accepting and bool(self._ready)

    def stop_intake(self) -> None:
        self.accepting = False

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
        margin = self.response_margin_ms
        deadline = now + (slo_ms - (margin if margin < 0.25 * slo_ms else 0.25 * slo_ms)) / 1000.0
        if self.shedding and self.queue:
            hopeless = self._hopeless_on_arrival(deadline, now)
            if hopeless is not None:
                self.metrics.by_outcome["shed"].inc()
                return hopeless
        fut = self._loop.create_future()  # type: ignore[union-attr]
        req = Request(next(self._ids), now, deadline, min_accuracy, Pending(row, fut, slo_ms))
        if not self.queue.try_push(req):
            self.metrics.by_outcome["rejected"].inc()
            return InferResult(Outcome.REJECTED, message=(
                f"queue full ({self.queue.capacity} requests waiting); slow down or retry later"))
        if deadline > self._latest_deadline or len(self.queue) == 1:
            self._latest_deadline = deadline
        if not self._pump_scheduled:
            # Coalesce: requests arriving in the same loop iteration are seen by one decision.
            self._pump_scheduled = True
            self._loop.call_soon(self._pump)  # type: ignore[union-attr]
        try:
            return await fut
        except asyncio.CancelledError:
            self.queue.remove(req)  # the client went away: free its slot
            raise

    def _hopeless_on_arrival(self, deadline: float, now: float) -> InferResult | None:
        """Shed at arrival, instead of after waiting out the deadline in the queue, a request
        that cannot finish in time even if every ready worker ran the queue ahead of it at
        peak rate from now on (a lower bound on its wait). Only when it queues last in EDF
        order (deadline >= every queued one), so no request that EDF would serve first is
        refused; under overload this keeps refusals immediate and the queue short."""
        if deadline < self._latest_deadline:
            return None
        ahead = len(self.queue)
        wait_s = ahead / (self._peak_rate_s * max(1, len(self._ready)))
        if now + wait_s + self.policy.min_service_s <= deadline:
            return None
        return InferResult(Outcome.SHED, message=(
            f"deadline cannot be met: {ahead} requests ahead need at least {wait_s * 1000:.1f} ms, "
            f"slo_ms={(deadline - now) * 1000:g}; raise slo_ms or lower the load"))

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
                f"fastest option needs {self.policy.min_service_s * 1000:.1f} ms; "
                "raise slo_ms or lower the load")))

    def _pump(self) -> None:
        """Dispatch to free workers while there is work."""
        self._pump_scheduled = False
        queue, policy = self.queue, self.policy
        if not queue:
            return
        now = time.monotonic()
        if not self._free:
            if self.shedding:
                # No worker free: still answer the hopeless at once instead of at the next
                # completion (O(1) when nothing has expired).
                self._shed(queue.drop_expired(now, policy.min_service_s), now)
            return
        while self._free and queue:
            if self.shedding:
                shed = policy.shed(queue, now)
                if shed:
                    self._shed(shed, now)
                    if not queue:
                        break
            decision = policy.decide(queue, now)
            batch = take_batch(queue, decision)
            w = self._free.popleft()
            seq = next(self._seqs)
            # A worker that neither answers nor dies (a hang) would hold its batch forever:
            # past max(hang_timeout_s, 10 x the expected latency) it is killed, and the death
            # path re-queues or answers the batch.
            limit = max(self.hang_timeout_s, decision.expected_latency_ms / 100.0)
            w.inflight = Inflight(seq, decision, batch, now,
                                  self._loop.call_later(limit, self._hung, w, seq))  # type: ignore[union-attr]
            self.pool.run(w, RunBatch(seq, decision.subnet_index, len(batch)),  # type: ignore[union-attr]
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
        self._pump()

    def batch_done(self, w: WorkerHandle, msg: BatchDone) -> None:
        inflight = self._take_inflight(w)
        now = time.monotonic()
        if inflight is not None and inflight.seq == msg.seq:
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
        self._pump()

    def batch_failed(self, w: WorkerHandle, msg: BatchFailed) -> None:
        inflight = self._take_inflight(w)
        if inflight is not None:
            for r in inflight.batch:
                self._answer(r, InferResult(Outcome.ERROR, message=f"inference failed: {msg.message}"))
        self._free.append(w)
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
        if inflight is not None:
            for r in inflight.batch:
                if self._ready and r.deadline - now >= self.policy.min_service_s \
                        and self.queue.try_push(r):
                    continue
                self._answer(r, InferResult(Outcome.UNAVAILABLE, message=(
                    f"worker {w.index} died while running this request (exit code {w.exitcode}) "
                    "and its deadline left no time to retry; retry")))
        if not self._ready:
            for r in self.queue.pop_earliest(len(self.queue)):
                self._answer(r, InferResult(Outcome.UNAVAILABLE, message="no live worker left; retry later"))
        self._pump()
