"""EdfQueue: ordering, removal, expiry and capacity, by example and by property."""
import pytest
from hypothesis import given, settings, strategies as st

from superserve.scheduling import EdfQueue, QueueFull, Request


def test_pop_in_deadline_order_with_id_ties():
    q = EdfQueue()
    for i, d in enumerate([3.0, 1.0, 2.0, 1.0]):
        q.push(Request(i, 0.0, d))
    assert q.peek().id == 1 and q.earliest_deadline == 1.0
    assert [r.id for r in q.pop_earliest(10)] == [1, 3, 2, 0]
    assert len(q) == 0 and q.peek() is None and q.earliest_deadline == float("inf")


def test_drop_expired_uses_min_service_time():
    q = EdfQueue()
    for i, d in enumerate([1.0, 1.004, 1.006, 2.0]):
        q.push(Request(i, 0.0, d))
    dropped = q.drop_expired(now=1.0, min_service_s=0.005)  # needs deadline >= 1.005
    assert [r.id for r in dropped] == [0, 1]
    assert [r.id for r in q] == [2, 3]


def test_remove_is_lazy_and_exact():
    q = EdfQueue()
    reqs = [Request(i, 0.0, float(i)) for i in range(5)]
    for r in reqs:
        q.push(r)
    assert q.remove(reqs[0]) and q.remove(reqs[3])
    assert not q.remove(reqs[3])
    assert len(q) == 3 and q.peek().id == 1
    assert [r.id for r in q.pop_earliest(5)] == [1, 2, 4]
    q.push(reqs[0])  # re-queued after removal (e.g. worker failure): must be live again
    assert [r.id for r in q.pop_earliest(5)] == [0]


def test_capacity_bound_is_explicit():
    q = EdfQueue(capacity=2)
    q.push(Request(0, 0, 1))
    assert q.try_push(Request(1, 0, 1))
    assert not q.try_push(Request(2, 0, 1))
    with pytest.raises(QueueFull):
        q.push(Request(2, 0, 1))


def test_duplicate_live_id_rejected():
    q = EdfQueue()
    q.push(Request(7, 0, 1))
    with pytest.raises(ValueError):
        q.push(Request(7, 0, 2))


def test_accuracy_floor_bookkeeping():
    q = EdfQueue()
    q.push(Request(0, 0, 1.0))
    assert not q.has_accuracy_floors and q.max_accuracy_floor(5) == 0.0
    q.push(Request(1, 0, 2.0, min_accuracy=0.8))
    assert q.max_accuracy_floor(1) == 0.0 and q.max_accuracy_floor(2) == 0.8
    q.pop_earliest(2)
    assert not q.has_accuracy_floors


ops = st.lists(st.tuples(st.sampled_from(["push", "pop", "remove", "expire"]),
                         st.floats(0, 10, allow_nan=False), st.integers(1, 5)), max_size=80)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_queue_matches_a_sorted_list_and_loses_nothing(script):
    q, model, out, next_id = EdfQueue(), [], [], 0
    for op, x, k in script:
        if op == "push":
            r = Request(next_id, 0.0, x)
            next_id += 1
            q.push(r)
            model.append(r)
        elif op == "pop":
            got = q.pop_earliest(k)
            model.sort(key=lambda r: (r.deadline, r.id))
            assert got == model[:k]
            out += got
            del model[:k]
        elif op == "remove" and model:
            victim = model[int(x) % len(model)]
            assert q.remove(victim)
            model.remove(victim)
            out.append(victim)
        elif op == "expire":
            got = q.drop_expired(x, 0.001)
            expect = sorted((r for r in model if r.deadline < x + 0.001), key=lambda r: (r.deadline, r.id))
            assert got == expect
            out += got
            model = [r for r in model if r not in expect]
        assert len(q) == len(model)
        if model:
            assert q.peek() == min(model, key=lambda r: (r.deadline, r.id))
    rest = q.pop_earliest(10**6)
    ids = [r.id for r in out + rest]
    assert sorted(ids) == list(range(next_id))  # every request left exactly once


@settings(max_examples=100, deadline=None)
@given(rate=st.floats(100, 50_000), span_ms=st.floats(2, 400), window_ms=st.floats(5, 250))
def test_arrival_rate_reads_a_fresh_stream_at_its_rate(rate, span_ms, window_ms):
    """A stream that started span_ms ago at a steady rate reads at about that rate in any
    window, also before a whole window has passed since the first arrival (a busy start is
    not diluted by the empty time before it)."""
    q = EdfQueue()
    n = max(2, int(rate * span_ms / 1000.0))
    gap = span_ms / 1000.0 / n
    for i in range(n):
        t = 10.0 + i * gap
        q.push(Request(i, t, t + 1.0))
    now = 10.0 + n * gap
    seen = min(window_ms / 1000.0, now - 10.0)
    expected = n * min(1.0, seen / (now - 10.0)) / seen
    assert q.arrival_rate(now, window_ms / 1000.0) == pytest.approx(expected, rel=0.05, abs=2 / seen)


def _stream(gaps):
    q, t = EdfQueue(), 0.0
    for i, g in enumerate(gaps):
        t += g
        q.push(Request(id=i, arrival=t, deadline=t + 1.0))
        q.pop_earliest(1)
    return q


def test_interarrival_cv2_tells_poisson_from_bursts():
    import numpy as np
    rng = np.random.default_rng(0)
    assert EdfQueue().interarrival_cv2 == 1.0  # nothing seen yet: read as Poisson
    assert _stream([1e-3] * 5000).interarrival_cv2 == pytest.approx(0.0, abs=1e-6)  # evenly spaced
    assert _stream(rng.exponential(1e-3, 20_000)).interarrival_cv2 == pytest.approx(1.0, abs=0.25)
    # On/off: bursts of 50 requests 10 us apart, then a 20-ms gap.
    onoff = ([1e-5] * 49 + [2e-2]) * 400
    assert _stream(onoff).interarrival_cv2 > 10.0


def test_requeued_request_is_not_a_new_arrival_for_burstiness():
    q = _stream([1e-3] * 3000)
    before = q.interarrival_cv2
    q.push(Request(id=10**6, arrival=1.0, deadline=4.0))  # re-queued: arrived long ago
    assert q.interarrival_cv2 == before


def test_arrivals_counts_new_arrivals_only():
    # The count the policies' virtual queues are fed from: a re-queued request (after a worker
    # failure) arrived long ago and is not counted twice; pops do not uncount.
    q = _stream([1e-3] * 100)
    assert q.arrivals == 100
    q.push(Request(id=10**6, arrival=0.05, deadline=2.0))  # re-queued
    assert q.arrivals == 100
    q.push(Request(id=10**6 + 1, arrival=1.0, deadline=2.0))
    assert q.arrivals == 101
