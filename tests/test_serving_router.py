"""The router against a fake worker pool: dispatch, deadlines, overload, worker death,
cancellation. No processes: every event is driven by hand, so each case is exact."""
from __future__ import annotations

import asyncio
import functools

import pytest

from superserve.outcome import Outcome
from superserve.serving.messages import BatchDone, BatchFailed
from superserve.serving.pool import WorkerState

ROW = bytes(4 * 784)


@pytest.fixture
def fake_router(fake_router):
    """The shared router on a fake pool (tests/conftest.py), planning with p99 here."""
    return functools.partial(fake_router, quantile="p99")


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def finish(router, pool, w_index: int) -> None:
    w = pool.workers[w_index]
    w.state = WorkerState.IDLE
    router.batch_done(w, BatchDone(router.in_flight(w).seq, 1.0))


def die(router, pool, w_index: int) -> None:
    w = pool.workers[w_index]
    w.state = WorkerState.DEAD
    router.worker_died(w)


def test_dispatch_and_answer(fake_router):
    async def main():
        router, pool = fake_router()
        task = asyncio.ensure_future(router.infer(ROW, 100.0))
        await settle()
        assert len(pool.runs) == 1 and pool.runs[0][2] == 1
        finish(router, pool, pool.runs[0][0])
        r = await task
        assert r.outcome is Outcome.IN_TIME and r.batch_size == 1 and len(r.logits) == 40
    asyncio.run(main())


def test_queue_full_is_rejected_at_once(fake_router):
    async def main():
        router, pool = fake_router(workers=1, queue_capacity=2)
        tasks = [asyncio.ensure_future(router.infer(ROW, 1000.0)) for _ in range(5)]
        await settle()
        done = [t.result() for t in tasks if t.done()]
        assert [r.outcome for r in done] == [Outcome.REJECTED] * 3
        assert "queue full" in done[0].message
    asyncio.run(main())


def test_hopeless_deadline_is_shed_even_when_workers_are_busy(fake_router):
    async def main():
        router, pool = fake_router(workers=1)
        busy = asyncio.ensure_future(router.infer(ROW, 1000.0))
        await settle()
        r = await router.infer(ROW, 0.001)
        assert r.outcome is Outcome.SHED and "deadline cannot be met" in r.message
        assert not busy.done()
    asyncio.run(main())


def test_worker_death_requeues_batch_on_the_other_worker(fake_router):
    async def main():
        router, pool = fake_router(workers=2)
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


def test_worker_death_without_time_left_answers_unavailable(fake_router):
    async def main():
        router, pool = fake_router(workers=2)
        task = asyncio.ensure_future(router.infer(ROW, 3.0))  # 3 ms: no time for a second try
        await settle()
        await asyncio.sleep(0.003)
        die(router, pool, pool.runs[0][0])
        r = await task
        assert r.outcome is Outcome.UNAVAILABLE and "died" in r.message
    asyncio.run(main())


def test_last_worker_death_answers_everything(fake_router):
    async def main():
        router, pool = fake_router(workers=1)
        tasks = [asyncio.ensure_future(router.infer(ROW, 5000.0)) for _ in range(20)]
        await settle()
        die(router, pool, 0)
        results = [await t for t in tasks]
        assert all(r.outcome is Outcome.UNAVAILABLE for r in results)
        r = await router.infer(ROW, 100.0)
        assert r.outcome is Outcome.UNAVAILABLE and not router.ready
    asyncio.run(main())


def test_failed_batch_is_an_error_and_worker_keeps_serving(fake_router):
    async def main():
        router, pool = fake_router(workers=1)
        task = asyncio.ensure_future(router.infer(ROW, 1000.0))
        await settle()
        w = pool.workers[0]
        w.state = WorkerState.IDLE
        router.batch_failed(w, BatchFailed(router.in_flight(w).seq, "RuntimeError: boom"))
        r = await task
        assert r.outcome is Outcome.ERROR and "boom" in r.message
        task = asyncio.ensure_future(router.infer(ROW, 1000.0))
        await settle()
        finish(router, pool, 0)
        assert (await task).ok
    asyncio.run(main())


def test_cancelled_caller_frees_its_queue_slot(fake_router):
    async def main():
        router, pool = fake_router(workers=1, queue_capacity=2)
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


def test_late_mode_serves_instead_of_shedding(fake_router):
    async def main():
        router, pool = fake_router(workers=1, late="serve")
        task = asyncio.ensure_future(router.infer(ROW, 0.001))
        await settle()
        assert pool.runs and pool.runs[0][1].batch_size == 1
        await asyncio.sleep(0.002)
        finish(router, pool, 0)
        assert (await task).outcome is Outcome.LATE
    asyncio.run(main())


def test_hung_worker_is_killed_by_the_watchdog(fake_router):
    async def main():
        router, pool = fake_router(workers=2, hang_timeout_s=0.02)
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


def test_response_margin_plans_early_but_judges_against_the_callers_deadline(monkeypatch, fake_router):
    import superserve.serving.router as router_mod

    clock = [1000.0]  # the router's monotonic clock, driven by hand
    monkeypatch.setattr(router_mod.time, "monotonic", lambda: clock[0])

    async def main():
        router, pool = fake_router(workers=1, response_margin_ms=5.0)
        task = asyncio.ensure_future(router.infer(ROW, 40.0))
        await settle()
        req = router.in_flight(pool.workers[0]).batch[0]
        assert req.deadline - req.arrival == pytest.approx(0.035)  # planned 5 ms early
        clock[0] += 0.037  # done after the planned deadline, before the caller's
        finish(router, pool, 0)
        assert (await task).outcome is Outcome.IN_TIME
        # a tiny SLO keeps three quarters of itself: the margin is capped at slo_ms / 4
        task = asyncio.ensure_future(router.infer(ROW, 4.0))
        await settle()
        req = router.in_flight(pool.workers[0]).batch[0]
        assert req.deadline - req.arrival == pytest.approx(0.003)
        clock[0] += 0.0041  # past the caller's deadline: late
        finish(router, pool, 0)
        assert (await task).outcome is Outcome.LATE
    asyncio.run(main())


# --- a poison input (issue 12) ----------------------------------------------------------------
class Events:
    """An EventLog stand-in that keeps what was emitted."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict]] = []

    def emit(self, event: str, message: str = "", **fields) -> None:
        self.seen.append((event, message, fields))


def crash(router, pool, w_index: int, exitcode: int = -11) -> None:
    """The worker crashed (SIGSEGV by default) while running its batch."""
    w = pool.workers[w_index]
    w.state, w.exitcode = WorkerState.DEAD, exitcode
    router.worker_died(w)


def test_a_crashed_batch_reruns_one_by_one_and_the_poison_input_gets_one_clear_error(fake_router):
    """Before: the dead batch went back to the queue with no limit per request, so an input
    that crashes the worker took down every worker in turn. Now the batch re-runs one request
    at a time; the one whose second worker dies too is answered ERROR (HTTP 500), named in the
    log; the others are served; every request gets exactly one answer."""
    async def main():
        router, pool = fake_router(workers=3)
        router.events = events = Events()
        tasks = [asyncio.ensure_future(router.infer(ROW, 5000.0)) for _ in range(3)]
        await settle()
        assert len(pool.runs) == 1 and pool.runs[0][2] == 3
        crash(router, pool, pool.runs[0][0])
        await settle()
        solo = pool.runs[1:]
        assert [n for _, _, n in solo] == [1, 1]  # two workers left: two of the three run alone now
        poison_worker = solo[0][0]
        crash(router, pool, poison_worker)  # the first of them is the poison: its second worker dies
        await settle()
        finish(router, pool, solo[1][0])
        assert [n for _, _, n in pool.runs[3:]] == [1]  # the third re-runs alone on the last worker
        finish(router, pool, pool.runs[3][0])
        results = [await t for t in tasks]
        bad = [r for r in results if not r.ok]
        assert len(bad) == 1 and bad[0].outcome is Outcome.ERROR
        assert "worker died twice running this request" in bad[0].message
        assert sum(r.outcome is Outcome.IN_TIME for r in results) == 2
        assert router.metrics.registry.get_sample_value("superserve_poison_requests_total") == 1
        (_, msg, fields), = [e for e in events.seen if e[0] == "poison_request"]
        assert fields["deaths"] == 2 and "answered 500" in msg
        lost = [e for e in events.seen if e[0] == "worker_died_running"]
        assert len(lost) == 2 and lost[0][2]["batch_size"] == 3 and "one by one" in lost[0][1]
    asyncio.run(main())


def test_a_worker_killed_from_outside_still_reruns_its_batch_whole_but_not_forever(fake_router):
    """SIGKILL (operator, OOM killer) is not the input's fault: the batch re-runs as a batch.
    A request whose worker dies twice is still answered ERROR, never re-run without end."""
    async def main():
        router, pool = fake_router(workers=3)
        tasks = [asyncio.ensure_future(router.infer(ROW, 5000.0)) for _ in range(2)]
        await settle()
        crash(router, pool, pool.runs[0][0], exitcode=-9)
        await settle()
        assert pool.runs[-1][2] == 2
        crash(router, pool, pool.runs[-1][0], exitcode=-9)
        results = [await t for t in tasks]
        assert all(r.outcome is Outcome.ERROR and "twice" in r.message for r in results)
        assert len(pool.runs) == 2  # never run a third time
    asyncio.run(main())


def test_a_hung_batch_is_a_suspect_like_a_crash(fake_router):
    async def main():
        router, pool = fake_router(workers=2, hang_timeout_s=0.02)
        tasks = [asyncio.ensure_future(router.infer(ROW, 5000.0)) for _ in range(2)]
        await settle()
        hung = pool.runs[0][0]
        await asyncio.sleep(0.5)  # past 10x the batch's expected latency
        assert pool.killed == [hung]
        crash(router, pool, hung, exitcode=-9)  # our own SIGKILL
        await settle()
        assert [n for _, _, n in pool.runs[1:]] == [1]  # one worker left: one of them runs alone
        finish(router, pool, pool.runs[1][0])
        finish(router, pool, pool.runs[2][0])
        assert all(r.ok for r in [await t for t in tasks])
    asyncio.run(main())


# --- sequence numbers --------------------------------------------------------------------------
def test_batch_sequence_numbers_wrap_within_uint32(fake_router):
    from superserve.serving.messages import RunBatch, decode, encode
    from superserve.serving.router import MAX_SEQ

    async def main():
        router, pool = fake_router(workers=1)
        router._seq = MAX_SEQ - 1
        seqs = []
        for _ in range(3):
            task = asyncio.ensure_future(router.infer(ROW, 1000.0))
            await settle()
            msg = pool.runs[-1][1]
            assert decode(encode(msg)) == msg  # packs as uint32
            seqs.append(msg.seq)
            finish(router, pool, 0)
            assert (await task).ok
        assert seqs == [MAX_SEQ, 1, 2]
        with pytest.raises(Exception):
            encode(RunBatch(MAX_SEQ + 1, 0, 1))  # what an unwrapped counter would have hit
    asyncio.run(main())


# --- a hard accuracy floor -------------------------------------------------------------------------
def test_strict_accuracy_floor_is_met_or_refused_and_answers_say_whether_it_was_met(fake_router):
    async def main():
        router, pool = fake_router(workers=1)
        # No served SubNet reaches it: refused at once, nothing queued.
        r = await router.infer(ROW, 1000.0, 0.9, strict=True)
        assert r.outcome is Outcome.FLOOR_UNMET and "0.8" in r.message and not pool.runs
        # Reachable within the deadline: served by a SubNet meeting it.
        task = asyncio.ensure_future(router.infer(ROW, 1000.0, 0.79, strict=True))
        await settle()
        finish(router, pool, 0)
        r = await task
        assert r.ok and r.accuracy >= 0.79 and r.floor_met
        # Best effort (not strict) with a deadline only the smallest SubNet fits: served, and says so.
        task = asyncio.ensure_future(router.infer(ROW, 3.0, 0.79))
        await settle()
        finish(router, pool, 0)
        r = await task
        assert r.ok and r.accuracy < 0.79 and not r.floor_met
        # Strict with the same deadline: no SubNet meeting the floor fits: refused, not served lower.
        r = await asyncio.wait_for(router.infer(ROW, 3.0, 0.79, strict=True), 1)
        assert r.outcome is Outcome.FLOOR_UNMET and "deadline" in r.message
    asyncio.run(main())


def test_a_strict_request_batched_below_its_floor_runs_alone_on_a_subnet_that_meets_it(fake_router):
    async def main():
        router, pool = fake_router(workers=1)
        busy = asyncio.ensure_future(router.infer(ROW, 1000.0))
        await settle()
        # Queued behind: an urgent request (only the smallest SubNet fits its slack) and a
        # strict one with a long deadline; EDF batches them together on the small SubNet.
        urgent = asyncio.ensure_future(router.infer(ROW, 4.0))
        strict = asyncio.ensure_future(router.infer(ROW, 1000.0, 0.79, strict=True))
        await settle()
        finish(router, pool, 0)
        await settle()
        first = pool.runs[-1][1]
        assert pool.runs[-1][2] == 1 and router.policy.table.accuracy[first.subnet_index] < 0.79
        finish(router, pool, 0)
        await settle()
        finish(router, pool, 0)
        r = await strict
        assert r.ok and r.accuracy >= 0.79 and r.floor_met and r.batch_size == 1
        assert (await urgent).ok and (await busy).ok
    asyncio.run(main())


def test_a_poison_input_retried_by_its_client_is_counted_across_requests(fake_router):
    """A crash with no time left to re-run answers 503 (retry); the retry of the same input
    starts from the deaths it already caused, so it costs two workers in all, and once it has,
    the same input is refused at once without a run."""
    async def main():
        router, pool = fake_router(workers=3)
        poison, good = bytes([1]) * (4 * 784), bytes([2]) * (4 * 784)
        task = asyncio.ensure_future(router.infer(poison, 3.0))
        await settle()
        await asyncio.sleep(0.004)  # past its deadline: no time to re-run it
        crash(router, pool, pool.runs[0][0])
        r = await task
        assert r.outcome is Outcome.UNAVAILABLE and "retry" in r.message
        task = asyncio.ensure_future(router.infer(poison, 5000.0))  # the client retries
        await settle()
        crash(router, pool, pool.runs[-1][0])
        r = await task
        assert r.outcome is Outcome.ERROR and "twice" in r.message
        runs = len(pool.runs)
        r = await asyncio.wait_for(router.infer(poison, 5000.0), 1)  # and again: refused, not run
        assert r.outcome is Outcome.ERROR and "not run again" in r.message and len(pool.runs) == runs
        task = asyncio.ensure_future(router.infer(good, 5000.0))  # other inputs are served
        await settle()
        finish(router, pool, pool.runs[-1][0])
        assert (await task).ok
    asyncio.run(main())


def test_turnaround_counts_only_workers_redispatched_at_once(fake_router):
    """The router measures how long a worker idles between its result and its next batch
    when work is waiting (the twin replays it); a worker that finds the queue empty adds no
    turnaround, but its batch still counts in the average."""
    async def main():
        router, pool = fake_router(workers=1)
        tasks = [asyncio.ensure_future(router.infer(ROW, 1000.0)) for _ in range(40)]
        await settle()
        assert len(pool.runs) == 1
        finish(router, pool, 0)  # the queue still holds work: re-dispatched at once
        assert len(pool.runs) == 2 and router._turn_n == 1 and router._turn_s > 0.0
        while True:
            before = router._turn_s
            finish(router, pool, 0)
            if router.in_flight(pool.workers[0]) is None:
                break
        # The last result found nothing to run: its batch counts, no time is added.
        assert router._turn_n == len(pool.runs) and router._turn_s == before
        await asyncio.gather(*tasks)
    asyncio.run(main())
