"""Bundle hot reload: swap a new SuperNet bundle in without dropping a request.

``POST /v2/admin/reload {"bundle": DIR}`` (and ``superserve reload``) ends here. The new
bundle is validated first, without touching what is served: it must be a complete bundle
whose weights' spec and latency profile read, with the served model's input shape and
number of classes, and the configured policy must build on its profile (a 4xx otherwise).
Then a second :class:`~superserve.serving.pool.WorkerPool` starts on it and loads and warms
every SubNet exactly as at start-up, while the old workers keep serving. Once all of them
are warm, one synchronous step on the router's loop switches over
(:meth:`~superserve.serving.router.Router.swap_bundle`): the router's policy, SubNet set,
profile and calibration planner become the new bundle's, the supervisor adopts the new pool
(:meth:`~superserve.serving.supervisor.Supervisor.adopt`), and the front ends' metadata
follows. Queued requests have no SubNet yet, so the new bundle serves them; a batch running
on an old worker finishes and is answered; then the old workers are stopped. A new worker
that fails to start stops the attempt: its pool is torn down and the old bundle serves on.
One reload at a time: another one meanwhile is refused (409).
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from superserve.bundle_layout import BundleLayout
from superserve.scheduling.calibration import CalibratedPlanner
from superserve.serving.codec import ApiError
from superserve.serving.config import ServeConfig
from superserve.serving.events import EventLog
from superserve.serving.messages import BatchDone, BatchFailed
from superserve.serving.model_info import ModelInfo, read_model_info
from superserve.serving.executor import Executor, make_executor
from superserve.serving.pool import WorkerHandle
from superserve.serving.router import Router
from superserve.serving.supervisor import Supervisor

RETIRE_TIMEOUT_S = 60.0  # the longest an old worker's last batch is waited for (a hang is killed sooner)


class _WarmUp:
    """The listener of a pool that is starting: done when every worker is warm, failed on
    the first death (nothing is dispatched to it yet)."""

    def __init__(self, pool: Executor, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.done: asyncio.Future[None] = loop.create_future()
        self._warm: set[WorkerHandle] = set()

    def worker_ready(self, w: WorkerHandle) -> None:
        self._warm.add(w)
        if len(self._warm) == len(self.pool.workers) and not self.done.done():
            self.done.set_result(None)

    def worker_died(self, w: WorkerHandle) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError(
                f"a worker on the new bundle died while loading it (exit code {w.exitcode}); see the server log"))

    def standby_ready(self, w: WorkerHandle) -> None:
        pass

    def batch_done(self, w: WorkerHandle, msg: BatchDone) -> None:  # never dispatched to
        pass

    def batch_failed(self, w: WorkerHandle, msg: BatchFailed) -> None:
        pass


class _Retiring:
    """The listener of the replaced pool: its last batches' results and deaths go to the
    router (which answers or re-queues them); nothing is restarted."""

    def __init__(self, router: Router) -> None:
        self.router = router

    def worker_ready(self, w: WorkerHandle) -> None:
        pass

    def standby_ready(self, w: WorkerHandle) -> None:
        pass

    def batch_done(self, w: WorkerHandle, msg: BatchDone) -> None:
        self.router.batch_done(w, msg)

    def batch_failed(self, w: WorkerHandle, msg: BatchFailed) -> None:
        self.router.batch_failed(w, msg)

    def worker_died(self, w: WorkerHandle) -> None:
        self.router.worker_died(w)


class Reloader:
    """Owns the served pool across reloads. ``make_planner``: the server's planner for a
    ModelInfo (raises ValueError when the configured policy does not fit its profile);
    ``on_swap``: called with the new ModelInfo right after the switch (front-end metadata)."""

    def __init__(self, config: ServeConfig, info: ModelInfo, router: Router, pool: Executor,
                 supervisor: Supervisor, events: EventLog, loop: asyncio.AbstractEventLoop,
                 make_planner: Callable[[ModelInfo], CalibratedPlanner],
                 on_swap: Callable[[ModelInfo], None], warmup_timeout_s: float = 300.0) -> None:
        self.config, self.info, self.router, self.pool = config, info, router, pool
        self.supervisor, self.events, self.loop = supervisor, events, loop
        self.make_planner, self.on_swap = make_planner, on_swap
        self.warmup_timeout_s = warmup_timeout_s
        self.reloads = 0
        self._task: asyncio.Task[dict[str, Any]] | None = None
        self._warming: _WarmUp | None = None
        self._closing = False
        self.busy: Callable[[], bool] = lambda: False  # the scaler's "changing the worker count"

    @property
    def in_progress(self) -> bool:
        return self._task is not None and not self._task.done()

    async def reload(self, bundle: object) -> dict[str, Any]:
        """Swap in the bundle at ``bundle``; the summary of what is served now, or ApiError
        (400 bad request, 404 no such directory, 409 a reload under way or shutting down,
        422 an unusable or incompatible bundle, 500 a new worker failed to start)."""
        if self.in_progress:
            raise ApiError(409, "a reload is already in progress; wait for it to finish")
        if self.busy():
            raise ApiError(409, "the worker count is being changed; reload once that is done")
        if self._closing or not self.router.accepting:
            raise ApiError(409, "the server is not serving (starting up or shutting down); reload refused")
        if not isinstance(bundle, str) or not bundle:
            raise ApiError(400, 'the body must be a JSON object {"bundle": "<bundle directory>"}')
        self._task = asyncio.ensure_future(self._reload(bundle))
        # Shielded: a client that goes away must not cancel a reload halfway through the swap.
        return await asyncio.shield(self._task)

    def validate(self, bundle: str) -> tuple[ModelInfo, CalibratedPlanner]:
        """Read and check the new bundle; touch nothing served. Raises ApiError (4xx)."""
        root = Path(bundle)
        if not root.is_dir():
            raise ApiError(404, f"no bundle directory at {bundle!r} (on the server's file system)")
        try:
            BundleLayout(root).require()
            # The bundle defines the SubNet space: its own profile, all of its SubNets.
            cfg = replace(self.config, bundle=str(root.resolve()), profile=None, subnets=None)
            info = read_model_info(cfg)
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ApiError(422, f"bundle {bundle!r} cannot be served: {exc}") from None
        old = self.info
        if info.input_shape != old.input_shape:
            raise ApiError(422, f"bundle {bundle!r} takes inputs of shape {list(info.input_shape)}, the served model "
                                f"{list(old.input_shape)}; a reload must keep the input shape")
        if info.num_classes != old.num_classes:
            raise ApiError(422, f"bundle {bundle!r} has {info.num_classes} classes, the served model "
                                f"{old.num_classes}; a reload must keep the number of classes")
        norm = (lambda i: None if i.data is None else (i.data.mean, i.data.std))
        if norm(info) != norm(old):
            raise ApiError(422, f"bundle {bundle!r} normalises its input differently (data.json) from the served "
                                "model; a reload must keep the input normalisation (start a new server instead)")
        try:
            planner = self.make_planner(info)
        except ValueError as exc:
            raise ApiError(422, f"bundle {bundle!r}: the configured policy does not fit its profile: {exc}") from None
        return info, planner

    async def _reload(self, bundle: str) -> dict[str, Any]:
        t0 = time.monotonic()
        info, planner = self.validate(bundle)
        self.events.emit("reload_started", f"hot reload: starting {self.config.workers} worker(s) on bundle "
                         f"{str(info.bundle)!r} ({len(info.subnet_ids)} SubNets); the current bundle serves meanwhile",
                         bundle=str(info.bundle), subnets=len(info.subnet_ids))
        try:
            pool = make_executor(info, self.config)
        except (OSError, ValueError) as exc:
            raise ApiError(500, f"reload failed, still serving the previous bundle: {exc}") from None
        warm = self._warming = _WarmUp(pool, self.loop)
        try:
            pool.start(self.loop, warm)
            await asyncio.wait_for(asyncio.shield(warm.done), self.warmup_timeout_s)
            if self._closing or not self.router.accepting:
                raise RuntimeError("the server began shutting down")
        except (Exception, asyncio.CancelledError) as exc:
            await pool.stop()
            pool.close()
            reason = (f"workers not warm after {self.warmup_timeout_s:.0f} s" if isinstance(exc, asyncio.TimeoutError)
                      else str(exc) or type(exc).__name__)
            self.events.emit("reload_failed", f"hot reload of {str(info.bundle)!r} failed, still serving the "
                             f"previous bundle: {reason}", bundle=str(info.bundle), error=reason)
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise ApiError(500, f"reload failed, still serving the previous bundle: {reason}") from None
        finally:
            self._warming = None
        warmup_s = time.monotonic() - t0
        # The switch: one synchronous step on the loop, nothing else runs in between.
        old_pool, old_info = self.pool, self.info
        old_pool.listener = _Retiring(self.router)
        self.supervisor.adopt(pool)
        retired = self.router.swap_bundle(info, planner, pool)
        self.pool, self.info = pool, info
        self.on_swap(info)
        self.reloads += 1
        in_flight = sum(1 for w in retired if self.router.in_flight(w) is not None)
        self.events.emit("bundle_swapped", f"hot reload: now serving bundle {str(info.bundle)!r} "
                         f"({len(info.subnet_ids)} SubNets) on pids {[w.pid for w in pool.workers]}; "
                         f"{in_flight} batch(es) finish on the old workers", bundle=str(info.bundle),
                         previous=str(old_info.bundle), worker_pids=[w.pid for w in pool.workers],
                         old_in_flight=in_flight, warmup_s=round(warmup_s, 3))
        drained = await self.router.wait_retired(max(RETIRE_TIMEOUT_S, 3 * self.router.hang_timeout_s))
        await old_pool.stop()
        old_pool.close()
        self.events.emit("reload_done", f"hot reload done in {time.monotonic() - t0:.1f} s; old workers stopped",
                         bundle=str(info.bundle), old_drained=drained)
        return {"bundle": str(info.bundle), "model": info.name, "subnets": info.subnet_ids,
                "worker_pids": [w.pid for w in pool.workers], "warmup_s": round(warmup_s, 3),
                "reload_s": round(time.monotonic() - t0, 3), "reloads": self.reloads}

    async def aclose(self) -> None:
        """Shutdown: refuse new reloads and tear down a pool still starting."""
        self._closing = True
        warm = self._warming
        if warm is not None and not warm.done.done():  # the reload task stops its pool and fails
            warm.done.set_exception(RuntimeError("the server began shutting down"))
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 10.0)
            except BaseException:  # noqa: BLE001 - its error was answered to its caller already
                pass
