"""Overload end to end (short version of benchmarks/overload.py): 10x the measured
sustainable rate for 5 s from client processes of their own. Every request is answered
(in time, late, shed or 429, each counted), none is lost, the router's fast answers stay
fast, and the router's memory is back near its baseline afterwards."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from superserve.embedded import EMBEDDED_DIR

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from overload import overload_experiment  # noqa: E402

BUNDLE = os.environ.get("SUPERSERVE_BUNDLE", str(EMBEDDED_DIR))


def test_ten_times_overload_answers_everything_and_recovers():
    r = overload_experiment(BUNDLE, seconds=5.0, factor=10.0, processes=2, log=lambda m: print("\n" + m))
    print({k: r[k] for k in ("sustainable_rps", "offered_rps", "overload_factor", "outcomes", "attainment",
                             "router_fast_answer_ms", "served_latency_ms", "rss_before", "rss_after")})
    assert r["requests_sent"] == r["responses_received"] and r["no_answer"] == 0  # none lost
    assert r["http_errors"] == 0  # every non-200 was an explicit 429/503/504
    assert r["overload_factor"] >= 3  # what the client could send on this machine (10x asked)
    assert r["outcomes"]["in_time"] < 0.5 * r["requests_sent"]  # it really was overloaded ...
    assert r["rejected_429"] + r["shed_or_unavailable"] > 0  # ... and shed explicitly, at once
    # Still doing useful work. (How much is a benchmark figure: on 2 cores the client
    # processes sending 10x take most of the CPU the router needs.)
    assert r["outcomes"]["in_time"] > 0
    assert r["router_fast_answer_ms"]["p99"] < 250  # a refusal never waits on the workers
    assert r["attainment"]["light_after"] >= 0.8  # serves normally again afterwards
    assert r["router_rss_growth_pct"] < 25  # (benchmark figure: docs/serving.md)
    assert r["worker_restarts"] == 0 and r["server_exit_code"] == 0


# --- admission: hopeless requests are refused at arrival (fake pool, exact) -------------------
def test_a_request_that_cannot_make_it_behind_the_queue_is_shed_at_arrival():
    import asyncio

    from superserve.profiling.latency_profile import LatencyProfile
    from superserve.scheduling import make_policy
    from superserve.serving.metrics import ServingMetrics
    from superserve.serving.model_info import ModelInfo
    from superserve.serving.pool import WorkerHandle, WorkerState
    from superserve.serving.router import Outcome, Router

    class Pool:
        workers = [WorkerHandle(0, None, None, None, memoryview(bytearray(640)))]
        num_alive = 1

        def run(self, w, msg, rows):
            w.state = WorkerState.BUSY

    async def main():
        profile = LatencyProfile.synthetic(num_subnets=2)
        policy = make_policy("slackfit", profile)
        router = Router(ModelInfo("m", (1, 28, 28), 10, profile, None), policy,
                        ServingMetrics({s.id: s.accuracy for s in profile.subnets}, 16), queue_capacity=10_000)
        pool = Pool()
        router.attach(pool, asyncio.get_running_loop())
        pool.workers[0].state = WorkerState.IDLE
        router.worker_ready(pool.workers[0])
        router.accepting = True
        row = bytes(4 * 784)
        # The worker takes the first batch; 2,000 more queue up behind it, with a deadline
        # shorter than the time the queue needs at peak rate.
        drain_ms = 2000 / router._peak_rate_s * 1000
        slo = 0.5 * drain_ms
        waiting = [asyncio.ensure_future(router.infer(row, slo)) for _ in range(2016)]
        for _ in range(3):
            await asyncio.sleep(0)
        queued = len(router.queue)
        refused = [t for t in waiting if t.done()]
        # About the first half fit (slo = half the drain time); the rest were refused at once.
        assert 0.3 * 2000 < queued < 0.7 * 2000 and len(refused) + queued + 16 >= 2016
        assert all(t.result().outcome is Outcome.SHED for t in refused)
        # A later one that queues last (its deadline is after every queued one) and cannot
        # make it: refused at once.
        await asyncio.sleep(0.15 * slo / 1000)
        r = await asyncio.wait_for(router.infer(row, 0.9 * slo), 0.1)
        assert r.outcome is Outcome.SHED and "requests ahead" in r.message
        assert len(router.queue) == queued  # never queued
        # A long deadline still queues; an earlier deadline than the queue's (EDF serves it
        # first) is never refused by this rule.
        long = asyncio.ensure_future(router.infer(row, 2 * drain_ms + 10_000.0))
        early = asyncio.ensure_future(router.infer(row, 0.1 * slo))
        for _ in range(3):
            await asyncio.sleep(0)
        assert not long.done()
        assert not early.done() or "requests ahead" not in early.result().message
        for t in waiting + [long, early]:
            t.cancel()
        await asyncio.gather(*waiting, long, early, return_exceptions=True)
    asyncio.run(main())
