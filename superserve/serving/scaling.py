"""Changing the number of workers while serving.

``POST /v2/admin/workers {"count": N}`` (and ``superserve workers N``) ends here; ``GET``
says how many there are. Growing: the executor adds slots after the last one and starts
their workers (a local process or a Ray actor each), which load and warm every SubNet as at
start-up; each joins the router's ready set the moment it is warm (the supervisor's
``worker_ready`` path), so the scheduler plans with it at once. The call returns when all
are warm; slots not warm within the timeout (a Ray cluster without room for another actor)
are removed again and the answer says so (503). Shrinking: the last slots leave the router's
ready set at once (the policy plans with the workers left from the next decision), the
batches they run finish and are answered, then they are stopped; the supervisor forgets
them. One change at a time, never during a hot reload (409), and the count is kept for a
later reload.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from superserve.serving.codec import ApiError
from superserve.serving.config import ServeConfig
from superserve.serving.events import EventLog
from superserve.serving.pool import WorkerHandle, WorkerState
from superserve.serving.reload import RETIRE_TIMEOUT_S, Reloader
from superserve.serving.router import Router
from superserve.serving.supervisor import Supervisor

MAX_WORKERS = 1024  # as ServeConfig.workers


class Scaler:
    def __init__(self, config: ServeConfig, reloader: Reloader, router: Router, supervisor: Supervisor,
                 events: EventLog, warmup_timeout_s: float = 300.0) -> None:
        self.config, self.reloader, self.router = config, reloader, router
        self.supervisor, self.events = supervisor, events
        self.warmup_timeout_s = warmup_timeout_s
        self._task: asyncio.Task[dict[str, Any]] | None = None
        reloader.busy = lambda: self.in_progress

    @property
    def in_progress(self) -> bool:
        return self._task is not None and not self._task.done()

    def info(self) -> dict[str, Any]:
        pool = self.reloader.pool
        return {"workers": len(pool.workers), "ready": pool.num_ready, "backend": pool.backend,
                "describe": pool.describe(), "worker_pids": [w.pid for w in pool.workers],
                "nodes": [getattr(w, "node_id", None) for w in pool.workers],
                "changing": self.in_progress}

    async def scale(self, count: object) -> dict[str, Any]:
        """Serve with ``count`` workers; what is served now, or ApiError (400 not a count,
        409 busy or not serving, 503 new workers not warm in time)."""
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_WORKERS:
            raise ApiError(400, f'the body must be a JSON object {{"count": N}} with an integer N in 1..{MAX_WORKERS}')
        if self.in_progress:
            raise ApiError(409, "the worker count is already being changed; wait for that to finish")
        if self.reloader.in_progress:
            raise ApiError(409, "a hot reload is in progress; change the worker count once it is done")
        if not self.router.accepting:
            raise ApiError(409, "the server is not serving (starting up or shutting down); refused")
        self._task = asyncio.ensure_future(self._scale(count))
        # Shielded: a client that goes away must not leave the change halfway.
        return await asyncio.shield(self._task)

    async def _scale(self, count: int) -> dict[str, Any]:
        t0 = time.monotonic()
        pool = self.reloader.pool
        before = len(pool.workers)
        if count > before:
            new = pool.add_workers(count - before)
            self.events.emit("workers_adding", f"adding {len(new)} worker(s) ({pool.backend}); they serve once warm",
                             count=count, previous=before)
            cold = await self._wait_warm(new)
            if cold:
                first = min(w.index for w in cold)
                await self._remove(pool.workers[first:])
                self.config.workers = len(pool.workers)
                self.events.emit("workers_add_failed", f"{len(cold)} new worker(s) not warm after "
                                 f"{self.warmup_timeout_s:g} s; removed, serving with {len(pool.workers)}",
                                 count=len(pool.workers), wanted=count)
                raise ApiError(503, f"{len(cold)} of {len(new)} new workers were not warm after "
                                    f"{self.warmup_timeout_s:g} s (no room for them? see the server log); they were "
                                    f"removed and the server serves with {len(pool.workers)} workers")
        elif count < before:
            await self._remove(pool.workers[count:])
        self.config.workers = count  # a later hot reload starts this many
        out = {**self.info(), "changing": False, "previous": before, "scale_s": round(time.monotonic() - t0, 3)}
        self.events.emit("workers_scaled", f"serving with {count} worker(s) (was {before}): {pool.describe()}",
                         count=count, previous=before, worker_pids=out["worker_pids"], scale_s=out["scale_s"])
        return out

    async def _wait_warm(self, new: list[WorkerHandle]) -> list[WorkerHandle]:
        """Wait until every new worker is warm (or the timeout); returns the cold ones. A new
        worker that dies while warming is restarted by the supervisor and waited for."""
        end = time.monotonic() + self.warmup_timeout_s
        while time.monotonic() < end:
            cold = [w for w in new if w.state not in (WorkerState.IDLE, WorkerState.BUSY)]
            if not cold or not self.router.accepting:
                return cold
            await asyncio.sleep(0.05)
        return [w for w in new if w.state not in (WorkerState.IDLE, WorkerState.BUSY)]

    async def _remove(self, victims: list[WorkerHandle]) -> None:
        if not victims:
            return
        pool = self.reloader.pool
        self.router.retire_workers(victims)
        self.supervisor.release(victims)
        pool.remove_workers(victims)
        await self.router.wait_retired(max(RETIRE_TIMEOUT_S, 3 * self.router.hang_timeout_s))
        await pool.stop_workers(victims)
