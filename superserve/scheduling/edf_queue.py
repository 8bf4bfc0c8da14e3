"""Earliest-deadline-first queue of requests.

A binary heap keyed by (deadline, id). Removal of arbitrary requests (client cancelled,
answered elsewhere) is lazy: the id is remembered and the entry is skipped when it reaches
the top, so every operation stays O(log n) and ``peek`` stays O(1) amortised. Removed
entries never outnumber live ones by much: once they do (and there are more than a few), the
heap is rebuilt without them, O(n) paid for by as many removals. So memory stays bounded by
about twice the capacity even when every request is cancelled far from its deadline.

The queue also keeps what a queue-aware policy needs about the stream feeding it, in O(1) per
push: the recent arrival times (:meth:`arrival_rate`) and the latest deadline queued since the
queue was last empty (:attr:`latest_deadline`).
"""
from __future__ import annotations

import heapq
from bisect import bisect_left
from typing import Iterator

from superserve.scheduling.request import Request


class QueueFull(Exception):
    """The queue is at its capacity bound; answer the request now (e.g. HTTP 503) instead."""


GAP_SPAN = 1024  # arrivals behind the burstiness estimate
GAP_WEIGHT = 1.0 / GAP_SPAN


class EdfQueue:
    """Requests ordered by absolute deadline (ties by id)."""

    __slots__ = ("_heap", "_removed", "_live", "capacity", "_floors", "_latest", "_times", "_t0", "horizon_s", "_first",
                 "_gap_m1", "_gap_m2", "arrivals")

    def __init__(self, capacity: int | None = None, *, horizon_s: float = 0.25) -> None:
        self._heap: list[tuple[float, int, Request]] = []
        self._removed: set[int] = set()  # ids removed but still somewhere in the heap
        self._live: set[int] = set()  # ids queued and not removed: O(1) len and remove()
        self.capacity = capacity
        # How many live requests carry an accuracy floor. Policies only pay for looking at
        # floors when this is non-zero, which keeps the common path O(1).
        self._floors = 0
        self._latest = float("-inf")  # >= every live deadline (stale-high after removals)
        # Arrival times of the last ``horizon_s`` seconds, oldest first from index _t0 (a list
        # with a moving start: appends and trims are O(1) amortised, counts are a bisect).
        self._times: list[float] = []
        self._t0 = 0
        self.horizon_s = horizon_s
        self._first = float("inf")  # the first arrival ever seen: a window never reaches before it
        # Moving averages of the inter-arrival gap and its square (the last ~GAP_SPAN arrivals):
        # the stream's burstiness, CV^2 = m2 / m1^2 - 1.
        self._gap_m1 = -1.0  # < 0: no gap seen yet
        self._gap_m2 = 0.0
        self.arrivals = 0  # new arrivals ever queued (a re-queued request is not one)

    # --- size ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._live)

    def __bool__(self) -> bool:
        return bool(self._live)

    @property
    def has_accuracy_floors(self) -> bool:
        return self._floors > 0

    # --- insertion -----------------------------------------------------------------------
    def push(self, request: Request) -> None:
        """Queue a request; raises :class:`QueueFull` at the capacity bound."""
        if self.capacity is not None and len(self._live) >= self.capacity:
            raise QueueFull(f"EDF queue holds {len(self._live)} requests (capacity {self.capacity})")
        if request.id in self._live:
            raise ValueError(f"request id {request.id} is already queued; ids must be unique")
        if request.id in self._removed:
            # The id was removed earlier and is being queued again (e.g. re-queued after a
            # worker failure): purge the stale entry first so the new one is not skipped.
            self._purge(request.id)
        if not self._live or request.deadline > self._latest:
            self._latest = request.deadline
        times = self._times
        if not times or request.arrival >= times[-1]:  # a re-queued request is not a new arrival
            if not times and request.arrival < self._first:
                self._first = request.arrival
            if times:
                gap = request.arrival - times[-1]
                if self._gap_m1 < 0.0:  # the first gap seeds both averages (no bias towards 0)
                    self._gap_m1, self._gap_m2 = gap, gap * gap
                else:
                    self._gap_m1 += (gap - self._gap_m1) * GAP_WEIGHT
                    self._gap_m2 += (gap * gap - self._gap_m2) * GAP_WEIGHT
            times.append(request.arrival)
            self.arrivals += 1
            if not len(times) & 4095:  # bounded memory even if nobody asks for the rate
                self._trim(request.arrival)
        heapq.heappush(self._heap, (request.deadline, request.id, request))
        self._live.add(request.id)
        if request.min_accuracy > 0.0:
            self._floors += 1

    def try_push(self, request: Request) -> bool:
        """Like :meth:`push`, but answers False instead of raising when full."""
        if self.capacity is not None and len(self._live) >= self.capacity:
            return False
        self.push(request)
        return True

    # --- the head ------------------------------------------------------------------------
    def _clean_top(self) -> None:
        heap, removed = self._heap, self._removed
        while heap and heap[0][1] in removed:
            removed.discard(heapq.heappop(heap)[1])

    def peek(self) -> Request | None:
        """The earliest-deadline request, or None when empty."""
        if self._removed:
            self._clean_top()
        return self._heap[0][2] if self._heap else None

    @property
    def earliest_deadline(self) -> float:
        """Deadline of the head request; +inf when empty."""
        if self._removed:
            self._clean_top()
        return self._heap[0][0] if self._heap else float("inf")

    @property
    def latest_deadline(self) -> float:
        """An upper bound on the latest queued deadline (exact unless requests were removed
        from the middle); -inf when empty."""
        return self._latest if self._live else float("-inf")

    # --- the stream ------------------------------------------------------------------------
    def arrival_rate(self, now: float, window_s: float, min_span_s: float = 0.001) -> float:
        """Requests per second that arrived in (now - window_s, now]; window_s <= horizon_s.
        Within the first window after the first arrival ever queued, the rate is over the
        time since then (at least ``min_span_s``): a stream that starts busy reads busy, and
        a long window is not read from a few requests (pass a longer ``min_span_s``)."""
        times = self._times
        if self._t0 < len(times) and times[self._t0] < now - self.horizon_s:
            self._trim(now)
        n = len(times) - bisect_left(times, now - window_s, self._t0)
        seen = now - self._first
        return n / (window_s if seen >= window_s else (seen if seen > min_span_s else min_span_s))

    @property
    def interarrival_cv2(self) -> float:
        """The squared coefficient of variation of the recent inter-arrival gaps (about the
        last ``GAP_SPAN`` arrivals): 1 for a Poisson stream, more for a bursty one; 1 before
        any gap is seen."""
        m1 = self._gap_m1
        return self._gap_m2 / (m1 * m1) - 1.0 if m1 > 0.0 else 1.0

    def _trim(self, now: float) -> None:
        times = self._times
        lo = bisect_left(times, now - self.horizon_s, self._t0)
        if lo > 4096 and lo * 2 > len(times):  # compact now and then
            del times[:lo]
            lo = 0
        self._t0 = lo

    # --- removal -------------------------------------------------------------------------
    def _take_top(self) -> Request:
        req = heapq.heappop(self._heap)[2]
        self._live.discard(req.id)
        if req.min_accuracy > 0.0:
            self._floors -= 1
        return req

    def pop_earliest(self, k: int) -> list[Request]:
        """Remove and return the (up to) k earliest-deadline requests, earliest first."""
        out: list[Request] = []
        heap, removed = self._heap, self._removed
        while heap and len(out) < k:
            if removed and heap[0][1] in removed:
                removed.discard(heapq.heappop(heap)[1])
                continue
            out.append(self._take_top())
        return out

    def drop_expired(self, now: float, min_service_s: float) -> list[Request]:
        """Remove and return every request that cannot finish by its deadline even if it were
        started now on the fastest option (``min_service_s``, overheads included)."""
        limit = now + min_service_s
        out: list[Request] = []
        heap, removed = self._heap, self._removed
        while heap and heap[0][0] < limit:
            if removed and heap[0][1] in removed:
                removed.discard(heapq.heappop(heap)[1])
                continue
            out.append(self._take_top())
        return out

    _COMPACT_MIN = 64  # removed entries tolerated in the heap whatever the live count

    def remove(self, request: Request) -> bool:
        """Forget a queued request in O(1) amortised (its heap entry is skipped later, or
        dropped at the next compaction). Returns False if it was not queued."""
        if request.id not in self._live:
            return False
        self._live.discard(request.id)
        self._removed.add(request.id)
        if request.min_accuracy > 0.0:
            self._floors -= 1
        if len(self._removed) > self._COMPACT_MIN and len(self._removed) > len(self._live):
            self._compact()
        return True

    def _compact(self) -> None:
        """Rebuild the heap without its removed entries (and the requests they hold)."""
        removed = self._removed
        self._heap = [e for e in self._heap if e[1] not in removed]
        heapq.heapify(self._heap)
        removed.clear()

    @property
    def heap_size(self) -> int:
        """Entries held, removed ones included (memory; at most ~2x the live count + 64)."""
        return len(self._heap)

    def _purge(self, request_id: int) -> None:
        self._heap = [e for e in self._heap if e[1] != request_id]
        heapq.heapify(self._heap)
        self._removed.discard(request_id)

    # --- inspection (not on the hot path) ------------------------------------------------
    def earliest(self, k: int) -> list[Request]:
        """The k earliest live requests without removing them (O(n log k))."""
        live = (e for e in self._heap if e[1] not in self._removed)
        return [e[2] for e in heapq.nsmallest(k, live)]

    def max_accuracy_floor(self, k: int) -> float:
        """The highest ``min_accuracy`` among the k earliest requests (0.0 without floors)."""
        if self._floors == 0:
            return 0.0
        return max((r.min_accuracy for r in self.earliest(k)), default=0.0)

    def __iter__(self) -> Iterator[Request]:
        """Live requests in deadline order (a sorted copy; for tests and debugging)."""
        return iter(e[2] for e in sorted(e for e in self._heap if e[1] not in self._removed))
