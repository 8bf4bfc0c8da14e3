"""Restarting dead workers: exponential back-off, re-admission only when warm, a limit and a
cool-down.

The :class:`Supervisor` sits between the :class:`~superserve.serving.pool.WorkerPool` and
the router as a pass-through :class:`~superserve.serving.pool.PoolListener`: the router
sees every event unchanged (it re-queues the dead worker's batch and stops dispatching to
it at once), and the supervisor additionally schedules ``pool.spawn`` for the dead slot.
The restarted process loads and warms every SubNet before it reports ready, and only that
report puts it back in the router's ready set, so no request ever waits on a cold worker.

A slot that dies ``max_deaths`` times within ``window_s`` (a crash on load, the OOM killer)
is given up for ``cooldown_s``: restarting it at once would burn the CPU the surviving
workers need. Then it is tried again with a fresh window, so a burst of deaths is never a
permanent outage (a poison input is stopped earlier, per request, by the router). With no
cool-down (None) or restarts off, a slot can be lost for good; :meth:`Supervisor.can_recover`
says when no slot can come back, and the server's liveness probe fails on it.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Callable, Protocol

from superserve.serving.events import EventLog
from superserve.serving.messages import BatchDone, BatchFailed
from superserve.serving.metrics import ServingMetrics
from superserve.serving.executor import Executor
from superserve.serving.pool import WorkerHandle, WorkerState
from superserve.serving.restart import RestartPolicy
from superserve.serving.router import InflightBatch

__all__ = ["RestartPolicy", "Supervisor"]


class BatchOwner(Protocol):
    """What the supervisor forwards pool events to: a model's Router, or the ModelMux of a
    server of several models (superserve/serving/multi.py), which routes them to the router
    whose batch the worker runs."""

    def worker_ready(self, worker: WorkerHandle) -> None: ...
    def batch_done(self, worker: WorkerHandle, msg: BatchDone) -> None: ...
    def batch_failed(self, worker: WorkerHandle, msg: BatchFailed) -> None: ...
    def worker_died(self, worker: WorkerHandle) -> None: ...
    def in_flight(self, worker: WorkerHandle) -> InflightBatch | None: ...


class Supervisor:
    """A :class:`~superserve.serving.pool.PoolListener` that forwards to the router and
    restarts dead workers. Deaths before :meth:`arm` (start-up) are only forwarded: a worker
    that cannot start is a configuration error the server reports and exits on."""

    def __init__(self, router: BatchOwner, pool: Executor, policy: RestartPolicy, metrics: ServingMetrics,
                 events: EventLog, loop: asyncio.AbstractEventLoop,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.router = router
        self.pool = pool
        self.policy = policy
        self.metrics = metrics
        self.events = events
        self.clock = clock
        self._loop = loop
        self._armed = False
        self._deaths: dict[int, deque[float]] = {}  # slot -> death times within the window
        self._down_since: dict[int, float] = {}  # slot -> when its death was seen
        self._timers: dict[int, asyncio.TimerHandle] = {}  # slot -> its pending restart
        self.given_up: set[int] = set()  # slots waiting out a cool-down (or lost for good)
        self.restarts = 0

    def arm(self) -> None:
        self._armed = True

    def stop(self) -> None:
        """Shutdown: no more restarts (the pool stops whatever is starting)."""
        self._armed = False
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def adopt(self, pool: Executor) -> None:
        """Hot reload: supervise ``pool`` (warm, ready) instead of the old one, whose pending
        restarts are cancelled and whose deaths and give-ups are forgotten; ``pool``'s events
        come here from now on. Call in the same loop step as the router's switch."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._deaths.clear()
        self._down_since.clear()
        self.given_up.clear()
        self.pool = pool
        pool.listener = self

    def release(self, ws: list[WorkerHandle]) -> None:
        """Scaling down: ``ws`` leave the pool; cancel their pending restarts, forget their
        deaths. A later death of one of them only reaches the router (its batch)."""
        for w in ws:
            timer = self._timers.pop(w.index, None)
            if timer is not None:
                timer.cancel()
            self._deaths.pop(w.index, None)
            self._down_since.pop(w.index, None)
            self.given_up.discard(w.index)

    def can_recover(self) -> bool:
        """False only when, armed, no worker is alive (serving or warming up) and none has a
        restart pending: nothing short of restarting the server brings one back."""
        if not self._armed:
            return True  # starting up (a failed start exits the server) or shutting down
        return bool(self._timers) or any(w.alive for w in self.pool.workers)

    # --- PoolListener --------------------------------------------------------------------
    def worker_ready(self, w: WorkerHandle) -> None:
        since = self._down_since.pop(w.index, None)
        if since is None:
            self.events.emit("worker_ready", worker=w.index, pid=w.pid, warmup_s=w.warmup_s, **(w.startup or {}))
        else:
            down_s = self.clock() - since
            self.metrics.worker_recovery_s.observe(down_s)
            self.events.emit("worker_ready", f"worker {w.index} (pid {w.pid}) is warm again and re-admitted, "
                             f"{down_s:.2f} s after its death", worker=w.index, pid=w.pid,
                             warmup_s=w.warmup_s, restarted=True, down_s=down_s, startup=w.startup)
        self.router.worker_ready(w)

    def standby_ready(self, w: WorkerHandle) -> None:
        self.events.emit("standby_ready", pid=w.pid, warmup_s=w.warmup_s, **(w.startup or {}))

    def batch_done(self, w: WorkerHandle, msg: BatchDone) -> None:
        self.router.batch_done(w, msg)

    def batch_failed(self, w: WorkerHandle, msg: BatchFailed) -> None:
        self.router.batch_failed(w, msg)

    def worker_died(self, w: WorkerHandle) -> None:
        if w not in self.pool.workers:  # removed by scaling down: its batch only, no restart
            self.router.worker_died(w)
            return
        inflight = self.router.in_flight(w)
        in_batch = len(inflight.batch) if inflight is not None else 0
        slot, pid = w.index, w.pid
        now = self.clock()
        recent = self._deaths.setdefault(slot, deque())
        recent.append(now)
        while recent and recent[0] < now - self.policy.window_s:
            recent.popleft()
        delay = self.policy.delay(len(recent)) if self._armed else None
        # A warm standby takes the slot before the router hears of the death, so the dead
        # worker's batch is re-queued onto a live worker even when it was the only one.
        replacement = self.pool.promote(w) if delay is not None else None
        self._down_since.setdefault(slot, now)
        self.events.emit("worker_died", f"worker {slot} (pid {pid}) died, exit code {w.exitcode}"
                         + (f" ({w.death})" if w.death else "") + f"; {in_batch} requests in flight",
                         worker=slot, pid=pid, exitcode=w.exitcode, in_flight=in_batch, deaths_in_window=len(recent),
                         **({"reason": w.death} if w.death else {}))
        if replacement is not None:
            self.restarts += 1
            self.metrics.worker_restarts.inc()
            self.events.emit("worker_restarted", f"worker {slot} replaced by the warm standby pid "
                             f"{replacement.pid}; a new standby is warming up", worker=slot,
                             pid=replacement.pid, standby=True)
            self.worker_ready(replacement)
        self.router.worker_died(w)  # the router re-queues or answers its batch at once
        if replacement is not None or not self._armed:
            return
        if delay is None:
            self._give_up(w, len(recent))
            return
        self.events.emit("worker_restart_scheduled", f"restarting worker {w.index} in {delay:.2f} s",
                         worker=w.index, delay_s=delay)
        self._timers[w.index] = self._loop.call_later(delay, self._restart, w)

    # --- internals -----------------------------------------------------------------------
    def _give_up(self, w: WorkerHandle, deaths: int) -> None:
        self.given_up.add(w.index)
        self._down_since.pop(w.index, None)
        self.metrics.worker_give_ups.inc()
        cooldown = self.policy.cooldown_s if self.policy.enabled else None
        if not self.policy.enabled:
            reason = "restarts are disabled"
        else:
            reason = f"it died {deaths} times within {self.policy.window_s:g} s"
        if cooldown is not None:
            then = f"it is tried again in {cooldown:g} s; the other workers serve meanwhile"
            self._timers[w.index] = self._loop.call_later(cooldown, self._cooled_down, w)
        else:
            then = ("it stays down (no cool-down set); the other workers serve, and once none is left the "
                    "liveness probe fails")
        self.events.emit("worker_given_up", f"worker {w.index} is not restarted now: {reason} (last exit code "
                         f"{w.exitcode}); {then}. Read this log for the worker's error", worker=w.index,
                         exitcode=w.exitcode, deaths_in_window=deaths, cooldown_s=cooldown)

    def _cooled_down(self, w: WorkerHandle) -> None:
        self.given_up.discard(w.index)
        self._deaths.pop(w.index, None)  # a fresh window
        self._down_since.setdefault(w.index, self.clock())
        self.events.emit("worker_cooldown_over", f"worker {w.index}: cool-down over, restarting it",
                         worker=w.index)
        self._restart(w)

    def _restart(self, w: WorkerHandle) -> None:
        self._timers.pop(w.index, None)
        if not self._armed or w.state is not WorkerState.DEAD:
            return
        try:
            self.pool.spawn(w)
        except OSError as exc:  # cannot fork now (memory, process limits): counts as a death
            self.events.emit("worker_spawn_failed", f"worker {w.index} could not be started: {exc}",
                             worker=w.index, error=str(exc))
            w.state = WorkerState.DEAD
            self.worker_died(w)
            return
        self.restarts += 1
        self.metrics.worker_restarts.inc()
        self.events.emit("worker_restarted", f"worker {w.index} restarted as pid {w.pid}; warming up",
                         worker=w.index, pid=w.pid)
