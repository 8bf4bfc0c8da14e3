"""Simulator: conservation, hand-computed tiny cases, failures, speed smoke test."""
import numpy as np
import pytest

from superserve.scheduling import ClipperPlus, MaxAcc, MaxBatch, SlackFit
from superserve.scheduling.profile import LatencyProfile
from superserve.scheduling.slackfit_paper import SlackFitPaper  # the hand-computed cases follow the paper's rule
from superserve.sim import IN_TIME, LATE, SHED, simulate
from superserve.sim.simulator import Tie
from superserve.workload import Trace, bursty

PROFILE = LatencyProfile.synthetic()


def test_single_request_gets_the_accurate_subnet(tiny_profile):
    p = tiny_profile
    r = simulate(np.array([0.0]), p, SlackFitPaper(p), slo_ms=10)
    assert r.outcome.tolist() == [IN_TIME] and r.finish[0] == pytest.approx(0.006)
    assert r.subnet_ids[r.subnet[0]] == "big" and r.mean_accuracy == pytest.approx(0.9)


def test_hand_computed_batching(tiny_profile):
    # t=0: one request, worker free -> big@1 (6 ms, fits 10 ms). Arrivals at 1,2,3 ms wait.
    # t=6 ms: three queued; earliest deadline 11 ms -> slack 5 ms: small@3 (5 ms) fits,
    # big@1 (6 ms) does not -> small batch of 3 finishing at 11 ms, all in time.
    p = tiny_profile
    r = simulate(np.array([0.0, 0.001, 0.002, 0.003]), p, SlackFitPaper(p, None), slo_ms=10)
    assert r.outcome.tolist() == [IN_TIME] * 4
    assert r.batch_size_log.tolist() == [1, 3]
    assert [r.subnet_ids[s] for s in r.batch_subnet] == ["big", "small"]
    assert r.finish.tolist() == pytest.approx([0.006, 0.011, 0.011, 0.011])


def test_shed_versus_serve_late(tiny_profile):
    # Fixed big model, 5 simultaneous requests, SLO 7 ms: only one batch of 1 fits.
    p = tiny_profile
    arr = np.zeros(5)
    shed = simulate(arr, p, ClipperPlus(p, "big"), slo_ms=7, late="shed")
    assert shed.count(IN_TIME) == 1 and shed.count(SHED) == 4 and shed.count(LATE) == 0
    late = simulate(arr, p, ClipperPlus(p, "big"), slo_ms=7, late="serve")
    assert late.count(IN_TIME) == 1 and late.count(LATE) == 4 and late.count(SHED) == 0
    assert late.slo_attainment == shed.slo_attainment == pytest.approx(0.2)


def test_overhead_is_added_to_every_batch(tiny_profile):
    p = tiny_profile
    r = simulate(np.array([0.0]), p, SlackFitPaper(p, overhead_ms=1.0), slo_ms=10, overhead_ms=1.0)
    assert r.finish[0] == pytest.approx(0.007) and r.subnet_ids[r.subnet[0]] == "big"


def test_worker_failure_requeues_in_flight_batch(tiny_profile):
    p = tiny_profile
    # Two workers; worker 0 takes request 0 at t=0 and dies at 1 ms; worker 1 is busy with
    # request 1 until 6 ms; request 0 then runs on worker 1 (deadline 20 ms allows it).
    r = simulate(np.array([0.0, 0.0]), p, SlackFit(p), num_workers=2, slo_ms=20, failures=[(0.001, 0)])
    assert r.count(IN_TIME) == 2
    assert sorted(r.finish.tolist()) == pytest.approx([0.006, 0.012])
    assert set(r.batch_worker.tolist()) == {0, 1}


def test_ties_failures_then_arrivals_then_completions(tiny_profile):
    assert list(Tie) == [Tie.FAILURE, Tie.ARRIVAL, Tie.COMPLETION]
    p = tiny_profile
    # big@1 completes at exactly 6 ms, when a request arrives: the arrival is queued first,
    # so it joins the next batch with the one that came at 3 ms.
    r = simulate(np.array([0.0, 0.003, 0.006]), p, SlackFitPaper(p, None), slo_ms=10)
    assert r.batch_size_log.tolist() == [1, 2]
    # A worker that fails at the very instant its batch completes has not completed it: the
    # request goes back to the queue and the other worker serves it.
    r = simulate(np.array([0.0]), p, SlackFitPaper(p, None), num_workers=2, slo_ms=30, failures=[(0.006, 0)])
    assert r.batch_worker.tolist() == [0, 1] and r.finish[0] == pytest.approx(0.012)


def test_all_workers_dead_leaves_requests_shed(tiny_profile):
    p = tiny_profile
    r = simulate(np.array([0.0, 0.005, 0.010]), p, SlackFit(p), slo_ms=50, failures=[(0.0, 0)])
    assert r.count(SHED) == 3


@pytest.mark.parametrize("late", ["shed", "serve"])
@pytest.mark.parametrize("latency", ["p50", "lognormal", "uniform"])
def test_conservation_every_request_one_outcome(late, latency):
    tr = bursty(1500, 2500, 8, 3, seed=4)
    for pol in (SlackFit(PROFILE), MaxBatch(PROFILE), MaxAcc(PROFILE, when_late="drain")):
        r = simulate(tr, PROFILE, pol, num_workers=3, slo_ms=40, latency=latency, late=late,
                     failures=[(1.0, 2)], seed=1)
        assert r.count(IN_TIME) + r.count(LATE) + r.count(SHED) == len(tr)
        answered = r.outcome != SHED
        assert np.all(r.finish[answered] >= r.arrival[answered])
        assert np.all((r.finish[r.outcome == IN_TIME] <= r.deadline[r.outcome == IN_TIME] + 1e-9))
        # Completed batches account for every answered request exactly once.
        assert r.batch_size[answered].min() >= 1 and r.subnet[answered].min() >= 0
        if late == "serve":
            assert r.count(SHED) == 0
        ts = r.time_series(0.5)
        assert len(ts["rate"]) == len(ts["accuracy"]) >= 6


def test_p50_planning_never_late():
    tr = bursty(1500, 2500, 8, 3, seed=5)
    r = simulate(tr, PROFILE, SlackFit(PROFILE), num_workers=3, slo_ms=40)
    assert r.count(LATE) == 0


def test_deterministic_for_a_seed():
    tr = bursty(1000, 1000, 4, 2, seed=1)
    a = simulate(tr, PROFILE, SlackFit(PROFILE), num_workers=2, slo_ms=30, latency="lognormal", seed=3)
    b = simulate(tr, PROFILE, SlackFit(PROFILE), num_workers=2, slo_ms=30, latency="lognormal", seed=3)
    assert np.array_equal(a.finish, b.finish, equal_nan=True)


def test_rejects_mismatched_profile(tiny_profile):
    with pytest.raises(ValueError, match="different profile"):
        simulate(np.array([0.0]), tiny_profile, SlackFit(PROFILE))


def test_scaled_profile_is_proportionally_slower():
    slow = PROFILE.scaled(1.5)
    assert [s.id for s in slow.subnets] == [s.id for s in PROFILE.subnets]
    for a, b in zip(PROFILE.subnets, slow.subnets):
        assert b.accuracy == a.accuracy
        assert b.latency_p50_ms == pytest.approx([v * 1.5 for v in a.latency_p50_ms])
        assert b.latency_p99_ms == pytest.approx([v * 1.5 for v in a.latency_p99_ms])
    with pytest.raises(ValueError, match="scale"):
        PROFILE.scaled(0.0)
