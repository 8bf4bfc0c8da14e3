"""SlackFit as the paper states it (SuperServe, NSDI 2025): pick the (SubNet, batch) whose latency
best fills the head request's slack. Kept as ``slackfit-paper`` for ablation; the default
``slackfit`` (superserve/scheduling/slackfit.py) also sees the backlog and the arrival rate.

Offline, the latency range [fastest SubNet at batch 1, most accurate SubNet at the largest
batch] is cut into ``num_buckets`` equal buckets; every profiled (SubNet, batch) option falls
into one, and each bucket keeps the option with the largest batch, then the highest
accuracy. Online, the slack of the earliest-deadline request selects the bucket whose
option's latency is the largest not above the slack. We compare against the options' own
latencies, not the bucket's upper edge, so the choice always fits: the highest bucket that
holds any option within the slack is chosen, and in it the largest-batch, then most
accurate, option within the slack (the whole bucket's pick when the slack covers it). Bursts shrink the
slack and select big batches of small SubNets; light load selects accurate SubNets.

``lookahead=True`` (not in the paper; the default ``lookahead=False`` is the paper's rule) makes the rule queue-aware: when more requests are queued than one batch holds, it
first looks for an option within the slack minus the time of one fastest batch for the
requests behind (their deadlines are no earlier than the first one's, so this is
conservative), and falls back to the plain slack if none fits.
Without it, under sustained load near the fastest SubNet's capacity, SlackFit keeps choosing
slower SubNets that fit the first request while the queue behind it falls behind
(docs/scheduling.md, section 5). Measured on the embedded profile: the worst of the small
optimality instances rose from 0.921 to 0.982 of the bound (0.873 to 0.989 on the earlier
8-epoch bundle).

Partial batches (fewer requests queued than the bucket's batch): ``partial="upgrade"``
(default) runs the most accurate SubNet whose latency at the actual batch size fits the
slack; ``partial="paper"`` runs the bucket's SubNet on the smaller batch, as the paper does.
"""
from __future__ import annotations

from bisect import bisect_right
from typing import Any, Literal

from superserve.scheduling.profile import LatencyProfile
from superserve.scheduling.policy import Decision, Policy

Partial = Literal["upgrade", "paper"]

DEFAULT_NUM_BUCKETS = 4  # measured in benchmarks/policies.py (part B); see docs/scheduling.md


class SlackFitPaper(Policy):
    name = "slackfit-paper"

    def __init__(self, profile: LatencyProfile, num_buckets: int | None = DEFAULT_NUM_BUCKETS, *,
                 partial: Partial = "upgrade", lookahead: bool = False, **common: Any) -> None:
        super().__init__(profile, **common)  # options= / the PolicyOptions fields
        if partial not in ("upgrade", "paper"):
            raise ValueError(f"partial must be 'upgrade' or 'paper', not {partial!r}")
        if num_buckets is not None and num_buckets < 1:
            raise ValueError("num_buckets must be >= 1 (or None for one bucket per option)")
        self.num_buckets = num_buckets
        self.partial = partial
        self.lookahead = bool(lookahead)
        t = self.table
        lo = t.latency_ms[t.fastest_subnet][0]
        hi = t.latency_ms[t.num_subnets - 1][t.max_batch - 1]
        self.range_ms = (lo, hi)
        # Every option, in latency order (ties: the better option last, so it wins).
        options = sorted(
            (t.latency_ms[s][b], b + 1, t.accuracy[s], s)
            for s in range(t.num_subnets) for b in range(t.max_batch))
        self._option_latency = [o[0] for o in options]
        # prefix_best[k]: among the options of option k's bucket up to k (all fit a slack
        # that k fits), the one with the largest batch, then the highest accuracy.
        prefix: list[Decision] = []
        best_key: tuple | None = None
        current_bucket: float | None = None
        kept: dict[float, tuple[float, int, int]] = {}
        for lat, b, acc, s in options:
            j = self.bucket_of(lat)
            key = (b, acc, -lat)
            if j != current_bucket or best_key is None or key > best_key[0]:
                best_key = (key, s, b)
                current_bucket = j
            prefix.append(self._decisions[best_key[1]][best_key[2] - 1])
            kept[j] = (self._decisions[best_key[1]][best_key[2] - 1].expected_latency_ms
                       - self.overhead_ms, best_key[1], best_key[2])
        self._prefix_best = prefix
        # The option each bucket keeps when the whole bucket fits: (latency_ms, subnet, batch).
        self.buckets: tuple[tuple[float, int, int], ...] = tuple(kept[j] for j in sorted(kept))

    def bucket_of(self, latency_ms: float) -> float:
        """Bucket index of a latency (num_buckets=None: every distinct latency is its own
        bucket, keyed by the latency itself so that bucket keys stay ordered)."""
        lo, hi = self.range_ms
        if self.num_buckets is None:
            return latency_ms
        if hi <= lo:
            return 0
        j = int((latency_ms - lo) / (hi - lo) * self.num_buckets)
        return min(max(j, 0), self.num_buckets - 1)

    def choose(self, slack_ms: float, max_batch: int) -> Decision | None:
        # The slowest option that fits marks the highest bucket within the slack; the answer
        # is that bucket's best option among those fitting.
        k = bisect_right(self._option_latency, slack_ms) - 1
        if k < 0:
            return None
        d = self._prefix_best[k]
        if max_batch >= d.batch_size:
            return d
        if self.partial == "paper":
            return self._decisions[d.subnet_index][max_batch - 1]
        # The bucket's SubNet fits at the smaller batch, so the frontier has a fitting entry.
        t = self.table
        k = bisect_right(t.frontier_latency[max_batch - 1], slack_ms) - 1
        return self._decisions[t.frontier_subnet[max_batch - 1][k]][max_batch - 1]

    def floor_rank(self, s: int, n: int) -> tuple:
        # Mirror the online rule on the options that meet the floor: latest bucket, then
        # largest batch, then accuracy.
        return (self.bucket_of(self.table.latency_ms[s][n - 1]), n, self.table.accuracy[s])

    def describe(self) -> str:
        la = ", lookahead=True" if self.lookahead else ""
        return f"num_buckets={self.num_buckets}, partial={self.partial!r}{la}, {super().describe()}"
