"""The paper's baseline policies, on the same interface as SlackFit.

* MaxBatch: the largest batch that fits the slack, then the most accurate SubNet at it.
* MaxAcc: the most accurate SubNet that fits at all, then the largest batch for it.
* ClipperPlus: one fixed SubNet (Clipper with a model per accuracy level), biggest batch
  that fits the slack.
* INFaaS: the cheapest SubNet meeting an accuracy floor (none: always the cheapest),
  biggest batch that fits.
"""
from __future__ import annotations

from bisect import bisect_right
from typing import Any

from superserve.scheduling.profile import LatencyProfile
from superserve.scheduling.policy import Decision, Policy


class MaxBatch(Policy):
    name = "maxbatch"

    def choose(self, slack_ms: float, max_batch: int) -> Decision | None:
        t = self.table
        for n in range(max_batch, 0, -1):
            k = bisect_right(t.frontier_latency[n - 1], slack_ms) - 1
            if k >= 0:
                return self._decisions[t.frontier_subnet[n - 1][k]][n - 1]
        return None

    def floor_rank(self, s: int, n: int) -> tuple:
        return (n, self.table.accuracy[s])


class MaxAcc(Policy):
    name = "maxacc"

    def __init__(self, profile: LatencyProfile, **common: Any) -> None:
        super().__init__(profile, **common)  # options= / the PolicyOptions fields
        # Most accurate first; equal accuracy: faster first.
        t = self.table
        self._by_accuracy = sorted(range(t.num_subnets), key=lambda s: (-t.accuracy[s], t.latency_ms[s][0]))

    def choose(self, slack_ms: float, max_batch: int) -> Decision | None:
        lat = self.table.latency_ms
        for s in self._by_accuracy:
            n = bisect_right(lat[s], slack_ms, 0, max_batch)
            if n:
                return self._decisions[s][n - 1]
        return None
    # Floors need nothing special: the scan is already most-accurate-first.


class ClipperPlus(Policy):
    name = "clipper+"

    def __init__(self, profile: LatencyProfile, subnet_id: str, **common: Any) -> None:
        super().__init__(profile, **common)
        self.subnet_id = subnet_id
        self.subnet_index = profile.index_of(subnet_id)

    def choose(self, slack_ms: float, max_batch: int) -> Decision | None:
        s = self.subnet_index
        n = bisect_right(self.table.latency_ms[s], slack_ms, 0, max_batch)
        return self._decisions[s][n - 1] if n else None

    def allowed_subnets(self) -> tuple[int, ...]:
        return (self.subnet_index,)  # one model: floors above it cannot be honoured

    @property
    def fallback_subnet(self) -> int:
        return self.subnet_index

    def describe(self) -> str:
        return f"subnet_id={self.subnet_id!r}, {super().describe()}"


class INFaaS(Policy):
    name = "infaas"

    def __init__(self, profile: LatencyProfile, min_accuracy: float | None = None, **common: Any) -> None:
        super().__init__(profile, **common)
        t = self.table
        self.policy_floor = float(min_accuracy or 0.0)
        self._by_cost = sorted(range(t.num_subnets), key=lambda s: (t.latency_ms[s][0], -t.accuracy[s]))
        meeting = [s for s in self._by_cost if t.accuracy[s] >= self.policy_floor]
        if not meeting:
            raise ValueError(f"no SubNet reaches min_accuracy={min_accuracy}; the best is {max(t.accuracy)}")
        self._cheapest = meeting[0]

    def _cheapest_fit(self, s: int, slack_ms: float, max_batch: int) -> Decision | None:
        n = bisect_right(self.table.latency_ms[s], slack_ms, 0, max_batch)
        return self._decisions[s][n - 1] if n else None

    def choose(self, slack_ms: float, max_batch: int) -> Decision | None:
        return self._cheapest_fit(self._cheapest, slack_ms, max_batch)

    def choose_with_floor(self, slack_ms: float, max_batch: int, floor: float) -> Decision | None:
        for s in self._by_cost:
            if self.table.accuracy[s] >= floor:
                return self._cheapest_fit(s, slack_ms, max_batch)
        return None

    @property
    def fallback_subnet(self) -> int:
        return self._cheapest

    def speed_subnets(self) -> tuple[int, ...]:
        return (self._cheapest,)

    def describe(self) -> str:
        return f"min_accuracy={self.policy_floor}, {super().describe()}"
