"""benchmarks/peers.py's rate search and no-op mode, on fakes (no servers, no timing)."""
from __future__ import annotations

import random

import pytest

from benchmarks._peers_search import search_max_rate


def threshold_runner(capacity: float, flaky: set[float] | None = None):
    """A fake system: attainment 1.0 at or below ``capacity``, 0.9 above; rates in ``flaky``
    (rounded) fail on their second visit (a candidate that does not reproduce)."""
    visits: dict[float, int] = {}
    calls: list[float] = []

    def run(rate: float) -> dict:
        calls.append(rate)
        key = round(rate, 3)
        visits[key] = visits.get(key, 0) + 1
        bad = rate > capacity or (flaky is not None and key in flaky and visits[key] >= 2)
        return {"attainment": 0.9 if bad else 1.0, "p50_ms": 1.0, "p99_ms": rate / 100}

    return run, calls


@pytest.mark.parametrize("capacity,start", [(700.0, 100.0), (700.0, 5000.0), (37.0, 300.0), (1000.0, 1000.0)])
def test_finds_capacity_within_tolerance(capacity, start):
    run, calls = threshold_runner(capacity)
    res = search_max_rate(run, start=start, repeats=2, rel_tol=0.05)
    assert capacity / 1.05 <= res.max_rate <= capacity
    assert len(res.runs) == 3 and all(r["rate"] == res.max_rate and r["passed"] for r in res.runs)
    assert calls.count(res.max_rate) == 3  # the first run plus two repeats
    assert res.p99_ms == res.max_rate / 100


def test_quick_mode_has_no_repeats():
    run, calls = threshold_runner(300.0)
    res = search_max_rate(run, start=100.0, repeats=0, rel_tol=0.1)
    assert 300.0 / 1.1 <= res.max_rate <= 300.0
    assert calls.count(res.max_rate) == 1 and len(res.runs) == 1


def test_unreproducible_candidate_steps_down():
    run0, _ = threshold_runner(700.0)
    first = search_max_rate(run0, start=100.0, repeats=0, rel_tol=0.05).max_rate
    run, calls = threshold_runner(700.0, flaky={round(first, 3)})
    res = search_max_rate(run, start=100.0, repeats=2, rel_tol=0.05)
    assert res.max_rate < first  # the flaky candidate does not count
    assert all(r["passed"] for r in res.runs) and len(res.runs) == 3
    assert res.max_rate >= first / 1.05 ** 2


def test_nothing_holds():
    res = search_max_rate(lambda r: {"attainment": 0.5}, start=100.0, min_rate=2.0)
    assert res.max_rate == 0.0 and res.runs == []
    assert res.trace[-1]["rate"] == 2.0  # halved down to the floor before giving up


def test_capped_at_max_rate():
    res = search_max_rate(lambda r: {"attainment": 1.0}, start=100.0, max_rate=4000.0, repeats=1)
    assert res.max_rate == 4000.0


def test_noisy_runner_terminates():
    rng = random.Random(1)
    res = search_max_rate(lambda r: {"attainment": 1.0 if r < 500 * rng.uniform(0.9, 1.1) else 0.99},
                          start=50.0, max_runs=25)
    assert len(res.trace) <= 25
    assert res.max_rate == 0.0 or res.max_rate < 560


def test_noop_worker_returns_zero_logits_without_the_model():
    torch = pytest.importorskip("torch")
    from superserve.serving.worker import SupernetRunner, WorkerSpec

    runner = SupernetRunner.__new__(SupernetRunner)  # no weights: noop must not touch the model
    runner.spec = WorkerSpec(index=0, weights_path="", norm_path="", subnet_ids=("a",), input_shape=(1, 2, 2),
                             num_classes=3, max_batch=4, noop=True)
    runner.inputs, runner.outputs = torch.ones(4, 1, 2, 2), torch.ones(4, 3)
    runner.crash, runner.model, runner.staging, runner.t_start = None, None, None, 0.0
    assert runner.run(0, 2) >= 0.0
    assert runner.outputs[:2].eq(0).all() and runner.outputs[2:].eq(1).all()
    assert runner.warm_up() >= 0.0  # no forward passes
