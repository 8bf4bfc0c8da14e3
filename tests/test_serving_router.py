"""The router against a fake worker pool: dispatch, deadlines, overload, worker death,
cancellation. No processes: every event is driven by hand, so each case is exact."""
from __future__ import annotations

import asyncio

import pytest

from superserve.profiling.latency_profile import LatencyProfile
from superserve.scheduling import make_policy
from superserve.serving.messages import BatchDone, BatchFailed
from superserve.serving.metrics import ServingMetrics
from superserve.serving.model_info import ModelInfo
from superserve.serving.pool import WorkerHandle, WorkerState
from superserve.serving.router import Outcome, Router

ROW = bytes(4 * 784)


class FakePool:
    def __init__(self, n: int) -> None:
        self.workers = [WorkerHandle(i, None, None, None, memoryview(bytearray(16 * 40))) for i in range(n)]
        self.runs: list[tuple[int, object, int]] = []
        self.killed: list[int] = []

    def kill(self, w) -> None:
        self.killed.append(w.index)

    def run(self, w, msg, rows) -> None:
        w.state = WorkerState.BUSY
        self.runs.append((w.index, msg, len(rows)))

    @property
    def num_ready(self) -> int:
        return sum(w.state in (WorkerState.IDLE, WorkerState.BUSY) for w in self.workers)

    num_alive = num_ready


def make_router(workers: int = 2, capacity: int = 64, late: str = "shed", hang_timeout_s: float = 2.0,
                response_margin_ms: float = 0.0):
    profile = LatencyProfile.synthetic(num_subnets=4)
    info = ModelInfo("m", (1, 28, 28), 10, profile, None)
    policy = make_policy("slackfit", profile, quantile="p99")
    router = Router(info, policy, ServingMetrics({s.id: s.accuracy for s in profile.subnets}, 16),
                    queue_capacity=capacity, late=late, hang_timeout_s=hang_timeout_s,
                    response_margin_ms=response_margin_ms)
    pool = FakePool(workers)
    router.attach(pool, asyncio.get_running_loop())
    for w in pool.workers:
        w.state = WorkerState.IDLE
        router.worker_ready(w)
    router.accepting = True
    return router, pool


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def finish(router, pool, w_index: int) -> None:
    w = pool.workers[w_index]
    w.state = WorkerState.IDLE
    router.batch_done(w, BatchDone(w.inflight.seq, 1.0))


def die(router, pool, w_index: int) -> None:
    w = pool.workers[w_index]
    w.state = WorkerState.DEAD
    router.worker_died(w)


def test_dispatch_and_answer():
    async def main():
        router, pool = make_router()
        task = asyncio.ensure_future(router.infer(ROW, 100.0))
        await settle()
        assert len(pool.runs) == 1 and pool.runs[0][2] == 1
        finish(router, pool, pool.runs[0][0])
        r = await task
        assert r.outcome is Outcome.IN_TIME and r.batch_size == 1 and len(r.logits) == 40
    asyncio.run(main())


def test_queue_full_is_rejected_at_once():
    async def main():
        router, pool = make_router(workers=1, capacity=2)
        tasks = [asyncio.ensure_future(router.infer(ROW, 1000.0)) for _ in range(5)]
        await settle()
        done = [t.result() for t in tasks if t.done()]
        assert [r.outcome for r in done] == [Outcome.REJECTED] * 3
        assert "queue full" in done[0].message
    asyncio.run(main())


def test_hopeless_deadline_is_shed_even_when_workers_are_busy():
    async def main():
        router, pool = make_router(workers=1)
        busy = asyncio.ensure_future(router.infer(ROW, 1000.0))
        await settle()
        r = await router.infer(ROW, 0.001)
        assert r.outcome is Outcome.SHED and "deadline cannot be met" in r.message
        assert not busy.done()
    asyncio.run(main())


def test_worker_death_requeues_batch_on_the_other_worker():
    async def main():
        router, pool = make_router(workers=2)
        tasks = [asyncio.ensure_future(router.infer(ROW, 5000.0)) for _ in range(3)]
        await settle()
        first = pool.runs[0][0]
        die(router, pool, first)
        await settle()
        assert pool.runs[-1][0] != first and pool.runs[-1][2] == 3  # re-run on the survivor
        finish(router, pool, pool.runs[-1][0])
        results = [await t for t in tasks]
        assert all(r.outcome is Outcome.IN_TIME for r in results)
    asyncio.run(main())


def test_worker_death_without_time_left_answers_unavailable():
    async def main():
        router, pool = make_router(workers=2)
        task = asyncio.ensure_future(router.infer(ROW, 3.0))  # 3 ms: no time for a second try
        await settle()
        await asyncio.sleep(0.003)
        die(router, pool, pool.runs[0][0])
        r = await task
        assert r.outcome is Outcome.UNAVAILABLE and "died" in r.message
    asyncio.run(main())


def test_last_worker_death_answers_everything():
    async def main():
        router, pool = make_router(workers=1)
        tasks = [asyncio.ensure_future(router.infer(ROW, 5000.0)) for _ in range(20)]
        await settle()
        die(router, pool, 0)
        results = [await t for t in tasks]
        assert all(r.outcome is Outcome.UNAVAILABLE for r in results)
        r = await router.infer(ROW, 100.0)
        assert r.outcome is Outcome.UNAVAILABLE and not router.ready
    asyncio.run(main())


def test_failed_batch_is_an_error_and_worker_keeps_serving():
    async def main():
        router, pool = make_router(workers=1)
        task = asyncio.ensure_future(router.infer(ROW, 1000.0))
        await settle()
        w = pool.workers[0]
        w.state = WorkerState.IDLE
        router.batch_failed(w, BatchFailed(w.inflight.seq, "RuntimeError: boom"))
        r = await task
        assert r.outcome is Outcome.ERROR and "boom" in r.message
        task = asyncio.ensure_future(router.infer(ROW, 1000.0))
        await settle()
        finish(router, pool, 0)
        assert (await task).ok
    asyncio.run(main())


def test_cancelled_caller_frees_its_queue_slot():
    async def main():
        router, pool = make_router(workers=1, capacity=2)
        busy = asyncio.ensure_future(router.infer(ROW, 1000.0))
        await settle()
        waiting = [asyncio.ensure_future(router.infer(ROW, 1000.0)) for _ in range(2)]
        await settle()
        assert len(router.queue) == 2
        waiting[0].cancel()
        await settle()
        assert len(router.queue) == 1
        with pytest.raises(asyncio.CancelledError):
            await waiting[0]
        assert busy.done() is False
    asyncio.run(main())


def test_late_mode_serves_instead_of_shedding():
    async def main():
        router, pool = make_router(workers=1, late="serve")
        task = asyncio.ensure_future(router.infer(ROW, 0.001))
        await settle()
        assert pool.runs and pool.runs[0][1].batch_size == 1
        await asyncio.sleep(0.002)
        finish(router, pool, 0)
        assert (await task).outcome is Outcome.LATE
    asyncio.run(main())


def test_hung_worker_is_killed_by_the_watchdog():
    async def main():
        router, pool = make_router(workers=2, hang_timeout_s=0.02)
        task = asyncio.ensure_future(router.infer(ROW, 5000.0))
        await settle()
        hung = pool.runs[0][0]
        await asyncio.sleep(0.1)
        assert pool.killed == [hung]
        die(router, pool, hung)  # what the pool reports once the kill lands
        await settle()
        finish(router, pool, pool.runs[-1][0])
        assert (await task).outcome is Outcome.IN_TIME
        assert pool.killed == [hung]  # the finished batch's watchdog was cancelled
    asyncio.run(main())


def test_response_margin_plans_early_but_judges_against_the_callers_deadline(monkeypatch):
    import superserve.serving.router as router_mod

    clock = [1000.0]  # the router's monotonic clock, driven by hand
    monkeypatch.setattr(router_mod.time, "monotonic", lambda: clock[0])

    async def main():
        router, pool = make_router(workers=1, response_margin_ms=5.0)
        task = asyncio.ensure_future(router.infer(ROW, 40.0))
        await settle()
        req = pool.workers[0].inflight.batch[0]
        assert req.deadline - req.arrival == pytest.approx(0.035)  # planned 5 ms early
        clock[0] += 0.037  # done after the planned deadline, before the caller's
        finish(router, pool, 0)
        assert (await task).outcome is Outcome.IN_TIME
        # a tiny SLO keeps three quarters of itself: the margin is capped at slo_ms / 4
        task = asyncio.ensure_future(router.infer(ROW, 4.0))
        await settle()
        req = pool.workers[0].inflight.batch[0]
        assert req.deadline - req.arrival == pytest.approx(0.003)
        clock[0] += 0.0041  # past the caller's deadline: late
        finish(router, pool, 0)
        assert (await task).outcome is Outcome.LATE
    asyncio.run(main())
