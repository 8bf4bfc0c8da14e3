"""Several SuperNets in one server (`superserve serve --bundle A --bundle B`).

Each served bundle is a model of its own name, with its own :class:`ModelInfo` (latency
profile, SubNets, SubnetNorm table, input shape and datatype), its own input codec, its own
policy (with calibration) and its own :class:`~superserve.serving.router.Router`, EDF queue and
metrics. What they share is the worker pool: every worker process holds every served
SuperNet, and a batch's :class:`~superserve.serving.messages.RunBatch` says which model
(``model``) and SubNet to run.

The models' names and configurations: :func:`superserve.serving.config.model_configs`.

The sharing rule (:class:`ModelMux`): **global EDF across the models' queues**. Whenever a
worker is free, it goes to the model whose earliest waiting request (head of its EDF queue,
or a request re-run alone) has the earliest deadline; that model's policy chooses the SubNet
and the batch from its own queue, exactly as a one-model server would, and the next free
worker is offered again by the same rule. A flood on one model therefore delays the other's
requests only as EDF does: a request of model B waits for the requests of model A whose
deadlines come before its own (and that A's admission control and shedding let in), never
for A's whole backlog. Each policy plans with the pool's worker count, as it would alone:
the workers are the model's whenever its head is due first, and it is the admission /
shedding test (``SchedulingStep``), not the planning, that would have to know the other
model's load; a request a shared worker cannot serve in time is still shed at dispatch.
"""
from __future__ import annotations

import asyncio
from collections import deque

from superserve.serving.messages import BatchDone, BatchFailed
from superserve.serving.pool import WorkerHandle, WorkerRunner
from superserve.serving.router import InferResult, InflightBatch, Router, wait_all_warm
from superserve.outcome import Outcome


class ModelMux:
    """The pool listener of a server of several models: one :class:`Router` per model over
    the same workers (they share the free-worker deque and the ready set), and the arbiter
    that decides whose batch a free worker runs next (global EDF across the models' heads;
    see the module docstring). Implements what the supervisor calls on a router."""

    def __init__(self, routers: list[Router], pool: WorkerRunner) -> None:
        self.routers = routers
        self.pool = pool
        self._free: deque[WorkerHandle] = deque()
        self._ready: set[WorkerHandle] = set()
        for i, r in enumerate(routers):
            r.model_index = i
            r.arbiter = self
            r._free, r._ready = self._free, self._ready
        self._all_warm = asyncio.Event()
        self._failed_start: str | None = None

    # --- the sharing rule ----------------------------------------------------------------
    def pump(self) -> None:
        """Hand free workers out, one batch at a time, to the model whose head is due first."""
        routers = self.routers
        for r in routers:
            r._pump_scheduled = False
        if any(r._check is not None for r in routers):
            return  # a start-up profile check holds every worker
        if not self._free:
            for r in routers:
                r.dispatch_some()  # sheds the hopeless only
            return
        while self._free:
            r = min(routers, key=lambda r: r.head_deadline)
            if r.head_deadline == float("inf"):
                return
            r.dispatch_some(1)

    # --- start-up / shutdown -------------------------------------------------------------
    async def wait_warm(self, timeout_s: float) -> None:
        await wait_all_warm(self._all_warm, timeout_s, lambda: self._failed_start)

    async def admit(self, check: bool) -> None:
        """Every worker is warm: run each model's start-up profile check in turn (each uses
        every worker), then admit traffic to all of them at once."""
        for r in self.routers:
            if check:
                await r.check_profile()
            else:
                r.start_calibration()
        for r in self.routers:
            r.accepting = True
        self.pump()

    @property
    def ready(self) -> bool:
        return all(r.ready for r in self.routers)

    def stop_intake(self) -> None:
        for r in self.routers:
            r.stop_intake()

    async def drain(self, timeout_s: float) -> None:
        await asyncio.gather(*(r.drain(timeout_s) for r in self.routers))

    def start_activity_log(self) -> None:
        for r in self.routers:
            r.start_activity_log()

    # --- PoolListener (through the supervisor) -------------------------------------------
    def in_flight(self, w: WorkerHandle) -> InflightBatch | None:
        for r in self.routers:
            inflight = r.in_flight(w)
            if inflight is not None:
                return inflight
        return None

    def _owner(self, w: WorkerHandle) -> Router:
        """The router whose batch ``w`` runs (the first model's when it runs none)."""
        return next((r for r in self.routers if r.in_flight(w) is not None), self.routers[0])

    def worker_ready(self, w: WorkerHandle) -> None:
        self._ready.add(w)
        self._free.append(w)
        if len(self._ready) == len(self.pool.workers) and not self._all_warm.is_set():
            self._all_warm.set()
            for r in self.routers:
                r._all_warm.set()
        checking = next((r for r in self.routers if r._check is not None), None)
        if checking is not None:
            checking._probe()
        else:
            self.pump()

    def batch_done(self, w: WorkerHandle, msg: BatchDone) -> None:
        self._owner(w).batch_done(w, msg)

    def batch_failed(self, w: WorkerHandle, msg: BatchFailed) -> None:
        self._owner(w).batch_failed(w, msg)

    def worker_died(self, w: WorkerHandle) -> None:
        if not self._all_warm.is_set():
            self._failed_start = (f"worker {w.index} died during start-up (exit code {w.exitcode}); "
                                  "run `superserve serve` in the foreground to see its error")
            self._all_warm.set()
        owner = self._owner(w)
        owner.worker_died(w)  # forgets the worker, re-queues or answers its batch, pumps
        if owner is not self.routers[0]:  # the pool's death counter is the first model's (POOL_METRICS)
            self.routers[0].metrics.worker_deaths.inc()
        if not self._ready:
            for r in self.routers:
                if r is not owner:
                    r._answer_all(InferResult(Outcome.UNAVAILABLE, message="no live worker left; retry later"))
