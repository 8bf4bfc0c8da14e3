"""The Pareto front of the search: accuracy against MACs and measured latency."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from superserve.profiling.search import Candidate, dominates, pareto_front
from superserve.supernet import fashion_mnist_spec

SPEC = fashion_mnist_spec()
CONFIG = SPEC.smallest()

cands = st.lists(st.tuples(st.integers(80, 95), st.integers(1, 12), st.integers(0, 12)), min_size=1, max_size=40)


def _make(rows):
    return [Candidate(CONFIG, acc / 100, macs, 0, lat / 2) for acc, macs, lat in rows]


@settings(max_examples=200, deadline=None)
@given(cands)
def test_front_is_exactly_the_non_dominated_set(rows):
    pool = _make(rows)
    front = pareto_front(pool)
    assert front, "a non-empty pool has a non-empty front"
    for c in front:
        assert not any(dominates(o, c) for o in pool)
    for c in pool:
        if not any(c is f for f in front):
            assert any(dominates(f, c) for f in front)  # domination is transitive: a front member beats it
    assert [c.macs for c in front] == sorted(c.macs for c in front)


def test_latency_keeps_a_subnet_that_macs_alone_would_drop():
    # B costs more MACs than A for the same accuracy but runs faster on the device: served
    # by a latency-driven scheduler, it is worth keeping.
    a = Candidate(CONFIG, 0.90, 100, 0, 5.0)
    b = Candidate(CONFIG, 0.90, 120, 0, 4.0)
    c = Candidate(CONFIG, 0.89, 130, 0, 6.0)  # dominated by both
    assert pareto_front([a, b, c]) == [a, b]
    # without latency (not measured) only MACs count
    assert pareto_front([Candidate(CONFIG, 0.90, 100, 0), Candidate(CONFIG, 0.90, 120, 0)]) == \
        [Candidate(CONFIG, 0.90, 100, 0)]
