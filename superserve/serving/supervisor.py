"""Restarting dead workers: exponential back-off, re-admission only when warm, and a limit.

The :class:`Supervisor` sits between the :class:`~superserve.serving.pool.WorkerPool` and
the router as a pass-through :class:`~superserve.serving.pool.PoolListener`: the router
sees every event unchanged (it re-queues the dead worker's batch and stops dispatching to
it at once), and the supervisor additionally schedules ``pool.spawn`` for the dead slot.
The restarted process loads and warms every SubNet before it reports ready, and only that
report puts it back in the router's ready set, so no request ever waits on a cold worker.

A slot that dies ``max_deaths`` times within ``window_s`` (a crash on load, a poisoned
batch, the OOM killer) is given up: restarting it forever would burn the CPU the
surviving workers need. That is logged with what to do and counted in metrics.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from superserve.serving.events import EventLog
from superserve.serving.messages import BatchDone, BatchFailed
from superserve.serving.metrics import ServingMetrics
from superserve.serving.pool import PoolListener, WorkerHandle, WorkerPool, WorkerState


@dataclass(frozen=True)
class RestartPolicy:
    enabled: bool = True
    backoff_s: float = 0.1  # delay before the first restart of a slot
    backoff_factor: float = 2.0  # each further death within the window multiplies it
    backoff_max_s: float = 10.0
    max_deaths: int = 5  # this many deaths of one slot within window_s: give up on it
    window_s: float = 60.0

    def __post_init__(self) -> None:
        if self.backoff_s < 0 or self.backoff_max_s < self.backoff_s or self.backoff_factor < 1:
            raise ValueError("restart back-off needs 0 <= backoff_s <= backoff_max_s and factor >= 1")
        if self.max_deaths < 1 or self.window_s <= 0:
            raise ValueError("restart limit needs max_deaths >= 1 and window_s > 0")

    def delay(self, recent_deaths: int) -> float | None:
        """Seconds to wait before restarting a slot that died ``recent_deaths`` times within
        the window (this death included); None: do not restart it."""
        if not self.enabled or recent_deaths >= self.max_deaths:
            return None
        return min(self.backoff_max_s, self.backoff_s * self.backoff_factor ** (recent_deaths - 1))


class Supervisor:
    """A :class:`PoolListener` that forwards to ``inner`` (the router) and restarts dead
    workers. Deaths before :meth:`arm` (start-up) are only forwarded: a worker that cannot
    start is a configuration error the server reports and exits on."""

    def __init__(self, inner: PoolListener, policy: RestartPolicy, metrics: ServingMetrics,
                 events: EventLog, clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.policy = policy
        self.metrics = metrics
        self.events = events
        self.clock = clock
        self.pool: WorkerPool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._armed = False
        self._deaths: dict[int, deque[float]] = {}  # slot -> death times within the window
        self._down_since: dict[int, float] = {}  # slot -> when its death was seen
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self.given_up: set[int] = set()
        self.restarts = 0

    def attach(self, pool: WorkerPool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool, self._loop = pool, loop
        pool.on_spare_ready = self._spare_ready

    def _spare_ready(self, w: WorkerHandle) -> None:
        self.events.emit("standby_ready", pid=w.pid, warmup_s=w.warmup_s, **(w.startup or {}))

    def arm(self) -> None:
        self._armed = True

    def stop(self) -> None:
        """Shutdown: no more restarts (the pool stops whatever is starting)."""
        self._armed = False
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

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
        self.inner.worker_ready(w)

    def batch_done(self, w: WorkerHandle, msg: BatchDone) -> None:
        self.inner.batch_done(w, msg)

    def batch_failed(self, w: WorkerHandle, msg: BatchFailed) -> None:
        self.inner.batch_failed(w, msg)

    def worker_died(self, w: WorkerHandle) -> None:
        inflight = getattr(w.inflight, "batch", None)
        in_batch = len(inflight) if inflight is not None else 0
        slot, pid = w.index, w.pid
        now = self.clock()
        recent = self._deaths.setdefault(slot, deque())
        recent.append(now)
        while recent and recent[0] < now - self.policy.window_s:
            recent.popleft()
        delay = self.policy.delay(len(recent)) if self._armed else None
        # A warm standby takes the slot before the router hears of the death, so the dead
        # worker's batch is re-queued onto a live worker even when it was the only one.
        replacement = self.pool.promote(w) if delay is not None else None  # type: ignore[union-attr]
        self._down_since.setdefault(slot, now)
        self.events.emit("worker_died", f"worker {slot} (pid {pid}) died, exit code {w.exitcode}; "
                         f"{in_batch} requests in flight", worker=slot, pid=pid, exitcode=w.exitcode,
                         in_flight=in_batch, deaths_in_window=len(recent))
        if replacement is not None:
            self.restarts += 1
            self.metrics.worker_restarts.inc()
            self.events.emit("worker_restarted", f"worker {slot} replaced by the warm standby pid "
                             f"{replacement.pid}; a new standby is warming up", worker=slot,
                             pid=replacement.pid, standby=True)
            self.worker_ready(replacement)
        self.inner.worker_died(w)  # the router re-queues or answers its batch at once
        if replacement is not None or not self._armed:
            return
        if delay is None:
            self._give_up(w, len(recent))
            return
        self.events.emit("worker_restart_scheduled", f"restarting worker {w.index} in {delay:.2f} s",
                         worker=w.index, delay_s=delay)
        self._timers[w.index] = self._loop.call_later(delay, self._restart, w)  # type: ignore[union-attr]

    # --- internals -----------------------------------------------------------------------
    def _give_up(self, w: WorkerHandle, deaths: int) -> None:
        self.given_up.add(w.index)
        self._down_since.pop(w.index, None)
        self.metrics.worker_give_ups.inc()
        reason = "restarts are disabled" if not self.policy.enabled else (
            f"it died {deaths} times within {self.policy.window_s:g} s")
        self.events.emit("worker_given_up", f"worker {w.index} is not restarted: {reason} (last exit code "
                         f"{w.exitcode}). The server keeps serving with the other workers; read this log "
                         "for the worker's error, fix it and restart the server", worker=w.index,
                         exitcode=w.exitcode, deaths_in_window=deaths)

    def _restart(self, w: WorkerHandle) -> None:
        self._timers.pop(w.index, None)
        if not self._armed or w.state is not WorkerState.DEAD:
            return
        try:
            self.pool.spawn(w)  # type: ignore[union-attr]
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
