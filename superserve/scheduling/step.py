"""The scheduling step the live router and the simulator share: admit, shed, decide, pop.

Before this module the router and the simulator each wrote their own loop around the policy,
and the two drifted apart (the router refused hopeless requests at arrival and bounded its
queue; the simulator did neither). Now both hold one :class:`SchedulingStep` and call:

* :meth:`SchedulingStep.arrive` for every arrival: refused at once when the queue is full
  (REJECTED) or, when shedding, when the request cannot finish in time even if every worker
  ran the queue ahead of it at peak rate (SHED); otherwise queued (ADMITTED);
* :meth:`SchedulingStep.schedule` whenever a worker is free and the queue is not empty: the
  policy sheds what it gives up on, decides, and the batch is popped; the answer is a
  :class:`StepOutput` (vLLM's ``SchedulerOutput`` idea: what to answer now, what to run);
* :meth:`SchedulingStep.expire` while every worker is busy: answer at once the requests that
  cannot finish even on the fastest option (O(1) when none has expired);
* :meth:`SchedulingStep.requeue` for the batch of a worker that died.

The step never touches time or tensors: ``now`` is the caller's clock (monotonic seconds in
the router, virtual seconds in the simulator). The policy can be replaced between calls
(:meth:`set_policy`, e.g. rebuilt from a recalibrated profile); what the step derives from
it (the admission rate bound) is recomputed then, never per request.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from superserve.scheduling.edf_queue import EdfQueue
from superserve.scheduling.policy import Decision, Policy
from superserve.scheduling.request import Request

ADMITTED, SHED, REJECTED = 0, 1, 2  # what :meth:`SchedulingStep.arrive` answers

_NO_SHED: list[Request] = []


@dataclass(frozen=True, slots=True)
class StepOutput:
    """One scheduling step for one free worker."""

    shed: list[Request]  # answer now: the deadline cannot be met (already removed from the queue)
    decision: Decision | None  # None: nothing to run (the queue is empty after shedding)
    batch: list[Request]  # the requests to run, earliest deadline first (popped)
    queue_len: int  # queue length when the decision was taken (before the pop)


class SchedulingStep:
    """Admission, shedding, the policy's decision and the pop, for the router and the simulator."""

    __slots__ = ("policy", "shedding", "_peak_rate_s", "_min_service_s")

    def __init__(self, policy: Policy, *, shedding: bool = True) -> None:
        self.shedding = shedding
        self.set_policy(policy)

    def set_policy(self, policy: Policy) -> None:
        """Install a (rebuilt) policy; takes effect at the next call."""
        self.policy = policy
        # The most requests per second one worker can finish (its best SubNet and batch, as
        # the policy plans): the bound arrival admission uses.
        self._peak_rate_s = policy.peak_rate_per_ms * 1000.0
        self._min_service_s = policy.min_service_s

    @property
    def min_service_s(self) -> float:
        return self._min_service_s

    @property
    def peak_rate_s(self) -> float:
        return self._peak_rate_s

    def wait_bound_s(self, ahead: int, workers: int) -> float:
        """A lower bound on the wait of a request queued behind ``ahead`` others."""
        return ahead / (self._peak_rate_s * (workers if workers > 1 else 1))

    # --- arrivals --------------------------------------------------------------------------
    def arrive(self, queue: EdfQueue, request: Request, now: float, workers: int) -> int:
        """Admit ``request`` into ``queue`` (ADMITTED), or refuse it: SHED when, shedding, it
        queues last in EDF order (so no request EDF would serve first is refused) and cannot
        finish in time even if ``workers`` ran the queue ahead of it at peak rate from now on;
        REJECTED when the queue is at its capacity."""
        deadline = request.deadline
        # queue.latest_deadline: >= every queued deadline (stale-high after removals: safe).
        if self.shedding and queue and deadline >= queue.latest_deadline:
            if now + len(queue) / (self._peak_rate_s * (workers if workers > 1 else 1)) \
                    + self._min_service_s > deadline:
                return SHED
        if not queue.try_push(request):
            return REJECTED
        return ADMITTED

    # --- a free worker ---------------------------------------------------------------------
    def schedule(self, queue: EdfQueue, now: float, workers: int | None = None) -> StepOutput:
        """Shed (when shedding), decide and pop for one free worker; ``workers``: how many
        workers serve the queue now (rate-aware policies plan per worker)."""
        policy = self.policy
        shed = policy.shed(queue, now) if self.shedding else _NO_SHED
        n = len(queue)
        if n == 0:
            return StepOutput(shed, None, [], 0)
        d = policy.decide(queue, now, workers)
        return StepOutput(shed, d, queue.pop_earliest(d.batch_size), n)

    def expire(self, queue: EdfQueue, now: float) -> list[Request]:
        """Every worker busy: remove and return (to answer now) the requests that cannot
        finish by their deadline even if started now on the fastest option. Empty when not
        shedding."""
        if not self.shedding:
            return _NO_SHED
        return queue.drop_expired(now, self._min_service_s)

    def requeue(self, queue: EdfQueue, requests: Iterable[Request], now: float, workers: int) -> list[Request]:
        """Put back the batch of a worker that died; returns the requests that could not go
        back (no worker left, when shedding too little time for the fastest option, or the
        queue is full). Not shedding, late requests go back too: they are served late."""
        lost = []
        shedding, need = self.shedding, self._min_service_s
        for r in requests:
            if workers > 0 and (not shedding or r.deadline - now >= need) and queue.try_push(r):
                continue
            lost.append(r)
        return lost
