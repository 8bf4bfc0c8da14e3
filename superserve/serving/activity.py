"""What the router did lately, for the live dashboard: two bounded rings, filled off the
request path.

Per answered batch the router appends one plain tuple to :attr:`ActivityLog.batches` (a
``deque(maxlen=...)``: O(1), no lock, no allocation but the tuple; the cost is measured by
``benchmarks/dashboard.py``). Once a second a timer on the router's loop closes a second:
it turns cumulative counters (arrivals, answers by outcome) into per-second differences and
summarises that second's batches into one record of :attr:`ActivityLog.seconds`. Both rings
share one increasing sequence number, so a reader asks for "everything after SEQ" and gets
each record once, however often it polls; the rings bound what the server keeps whether or
not anyone reads.
"""
from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from typing import Mapping, NamedTuple, Sequence

# One answered batch: its sequence number, when it was answered (time.monotonic()), the
# SubNet's index in the served list, requests in it, how many of them in time, the worker's
# compute time, the worker, and the requests still waiting when it was answered.
BATCH_FIELDS = ("seq", "t", "subnet", "size", "in_time", "compute_ms", "worker", "queue")
# One second: answers by outcome counted when given (``other``: unavailable, error, floor
# unmet), arrivals at the router, mean profiled accuracy of the requests served, the queue
# at the tick and its largest value seen by a batch, batches and their mean size, and the
# calibrated estimate (speed factor, per-batch overhead, response margin) at the tick.
SECOND_FIELDS = ("seq", "t", "arrivals", "in_time", "late", "shed", "rejected", "other", "accuracy",
                 "queue", "queue_max", "batches", "batch_mean", "speed", "overhead_ms", "margin_ms")
_OTHER = ("unavailable", "error", "floor_unmet")


class Totals(NamedTuple):
    """Cumulative counts since the server started (what a second is the difference of)."""

    arrivals: int
    answered: Mapping[str, float]  # outcome label -> requests answered with it


class Estimate(NamedTuple):
    """The calibrated latency estimate at a tick (all zero without calibration)."""

    speed: float = 0.0
    overhead_ms: float = 0.0
    margin_ms: float = 0.0


@dataclass(frozen=True)
class Since:
    """The records after a sequence number (newest ``limit`` of each kind at most)."""

    last_seq: int  # the newest record's sequence number (0: none yet)
    batches: list[tuple]
    seconds: list[tuple]
    truncated: bool  # older records after ``since`` were left out (ring overwritten or limit)


class ActivityLog:
    def __init__(self, accuracy: Sequence[float], *, batches: int = 4096, seconds: int = 900) -> None:
        """``accuracy``: profiled accuracy by SubNet index (what the per-second accuracy
        averages). ``batches`` / ``seconds``: ring sizes; the defaults keep 15 minutes of
        seconds and, at a few hundred batches per second, the last 10-20 s of batches (a
        polling page keeps its own longer history)."""
        self.accuracy = tuple(accuracy)
        self.batches: deque[tuple] = deque(maxlen=batches)
        self.seconds: deque[tuple] = deque(maxlen=seconds)
        self.seq = itertools.count(1)  # the router takes batch numbers from it: next(log.seq)
        self._last = Totals(0, {})  # the counters at the previous tick (the server's start: zero)
        self._last_batch_seq = 0

    def close_second(self, now: float, totals: Totals, queue: int, estimate: Estimate) -> tuple:
        """Append the record of the second that ends at ``now`` (everything since the previous
        call) and return it."""
        last, self._last = self._last, totals
        done = {k: totals.answered.get(k, 0.0) - last.answered.get(k, 0.0) for k in totals.answered}
        batches = _after(self.batches, self._last_batch_seq)
        if batches:
            self._last_batch_seq = batches[-1][0]
        served = sum(b[3] for b in batches)
        accuracy = (sum(self.accuracy[b[2]] * b[3] for b in batches) / served) if served else None
        record = (next(self.seq), now, totals.arrivals - last.arrivals, int(done.get("in_time", 0)),
                  int(done.get("late", 0)), int(done.get("shed", 0)), int(done.get("rejected", 0)),
                  int(sum(done.get(k, 0) for k in _OTHER)), accuracy, queue,
                  max([queue, *(b[7] for b in batches)]), len(batches),
                  served / len(batches) if batches else None, *estimate)
        self.seconds.append(record)
        return record

    def since(self, seq: int, limit: int) -> Since:
        """Every record after ``seq`` (at most the newest ``limit`` batches and seconds)."""
        rings = (self.batches, self.seconds)
        batches, seconds = _after(self.batches, seq), _after(self.seconds, seq)
        # A full ring whose oldest record is already after ``seq`` may have dropped some.
        truncated = len(batches) > limit or len(seconds) > limit or any(
            len(ring) == ring.maxlen and ring[0][0] > seq for ring in rings)
        newest = max((ring[-1][0] for ring in rings if ring), default=0)
        return Since(newest, batches[-limit:], seconds[-limit:], truncated)


def _after(ring: deque[tuple], seq: int) -> list[tuple]:
    """The records of ``ring`` with a sequence number above ``seq``, oldest first (walked from
    the newest end: the cost is proportional to what is returned, not to the ring)."""
    out: list[tuple] = []
    for rec in reversed(ring):
        if rec[0] <= seq:
            break
        out.append(rec)
    out.reverse()
    return out
