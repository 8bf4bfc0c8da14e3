"""SlackFit that sees the queue and the rate: the most accurate SubNet the load can afford,
at the batch that fills the slack.

The paper's rule (``slackfit-paper``) looks only at the head request's slack. With an 11x
throughput range across the served SubNets and a slack that often exceeds the largest
SubNet's batch time, it picks large SubNets exactly when only small ones keep up: the queue
behind the head grows, and a burst then meets slow batches (docs/scheduling.md).

This rule decides in two steps, both O(log) per decision:

1. **Capacity cap (the plan).** The demand per worker is the larger of the recent arrival
   rate (``rate_window_ms``) and the rate at which the queued backlog must be served to meet
   its latest deadline, divided by the number of workers and raised by ``margin``. The cap is
   the most accurate SubNet whose *capacity* covers it: its best throughput, b / latency(b),
   over the batches whose latency fits ``batch_share`` of the SLO (a batch that long still
   leaves the requests queued behind it time for their own batch). The best batch is measured,
   not assumed: where batch 16 costs more per request than 15, 15 counts.
2. **Slack fit (the choice).** Among SubNets no more accurate than the cap, the most accurate
   one that fits the head's slack (minus one fastest batch for the requests behind a full
   batch: the lookahead reserve), at its most efficient batch that fits and the queue fills.

Light load leaves the cap at the most accurate SubNet, and the slack decides (as in the
paper); a burst raises the demand at once through the backlog term and the cap drops to
SubNets that can drain it. When nothing covers the demand, the cap is the SubNet of highest
capacity: that is what maximises the requests served in time under overload.
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from superserve.profiling.latency_profile import LatencyProfile
from superserve.scheduling.edf_queue import EdfQueue
from superserve.scheduling.policy import Decision, Policy, ShedRule, WhenLate

DEFAULT_RATE_WINDOW_MS = 20.0
DEFAULT_MARGIN = 0.15
DEFAULT_BATCH_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class _Staircase:
    """SubNets on the accuracy-vs-capacity front for one batch-latency limit: capacities
    descending, accuracies ascending; the most accurate SubNet covering a demand r is the
    last entry whose capacity is >= r."""

    neg_capacity: tuple[float, ...]  # -requests per ms, ascending (for bisect)
    subnet: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Plan:
    cap: int  # the most accurate SubNet the demand affords
    need_per_ms: float  # requests per ms one worker must serve to drain the backlog in time
    limit_ms: float  # longest batch worth committing a worker to (batch_share x SLO)


class SlackFit(Policy):
    name = "slackfit"

    def __init__(self, profile: LatencyProfile, *, rate_window_ms: float = DEFAULT_RATE_WINDOW_MS,
                 margin: float = DEFAULT_MARGIN, rate_weight: float = 1.0, batch_share: float = DEFAULT_BATCH_SHARE,
                 lookahead: bool = False, num_workers: int = 1, overhead_ms: float = 0.0,
                 when_late: WhenLate = "fastest", quantile: str = "p50", shed_rule: ShedRule = "backlog") -> None:
        super().__init__(profile, overhead_ms=overhead_ms, when_late=when_late, quantile=quantile,
                         shed_rule=shed_rule, num_workers=num_workers)
        if rate_window_ms <= 0:
            raise ValueError("rate_window_ms must be > 0")
        if margin < 0:
            raise ValueError("margin must be >= 0")
        if rate_weight < 0:
            raise ValueError("rate_weight must be >= 0")
        self.rate_weight = float(rate_weight)
        if not 0 < batch_share <= 1:
            raise ValueError("batch_share must be in (0, 1]")
        self.rate_window_ms = float(rate_window_ms)
        self.margin = float(margin)
        self.batch_share = float(batch_share)
        self.lookahead = bool(lookahead)
        t, oh = self.table, self.overhead_ms
        # Latency with the known overhead: what a decision really costs.
        self._lat = tuple(tuple(v + oh for v in row) for row in t.latency_ms)
        # Accuracies along each per-batch front (ascending, like its latencies).
        self._front_acc = tuple(tuple(t.accuracy[s] for s in subs) for subs in t.frontier_subnet)
        fast_row = self._lat[t.fastest_subnet]
        self._fast_batch_ms = max(fast_row)  # the last batch of a drain, at worst
        self._stairs: dict[int, _Staircase] = {}

    # --- step 1: the cap ------------------------------------------------------------------
    def _staircase(self, limit_ms: float) -> _Staircase:
        key = int(limit_ms * 4)  # 0.25-ms steps: a handful of entries per SLO in use
        st = self._stairs.get(key)
        if st is None:
            limit = key / 4.0
            caps = []
            for s, row in enumerate(self._lat):
                k = bisect_right(row, limit)
                if k == 0:
                    k = 1  # even batch 1 is longer than the limit: its batch-1 rate still counts
                caps.append(self._efficient[s][k - 1] / row[self._efficient[s][k - 1] - 1])
            order = sorted(range(len(caps)), key=lambda s: (-caps[s], -self.table.accuracy[s]))
            neg, subs, best_acc = [], [], -1.0
            for s in order:
                if self.table.accuracy[s] > best_acc:
                    best_acc = self.table.accuracy[s]
                    neg.append(-caps[s])
                    subs.append(s)
            st = _Staircase(tuple(neg), tuple(subs))
            if len(self._stairs) < 4096:
                self._stairs[key] = st
        return st

    def plan(self, queue: EdfQueue, now: float, workers: int) -> _Plan:
        head = queue.peek()
        slo_ms = (head.deadline - head.arrival) * 1000.0  # type: ignore[union-attr]
        rate = self.rate_weight * queue.arrival_rate(now, self.rate_window_ms / 1000.0) / 1000.0  # per ms
        # The backlog must be served before the latest queued deadline (its last batch too).
        window = (queue.latest_deadline - now) * 1000.0 - self._fast_batch_ms
        backlog = len(queue) / window if window > 0.0 else float("inf")
        grow = (1.0 + self.margin) / workers
        limit_ms = self.batch_share * slo_ms
        st = self._staircase(limit_ms)
        k = bisect_right(st.neg_capacity, -(rate if rate > backlog else backlog) * grow) - 1
        return _Plan(st.subnet[k if k >= 0 else 0], backlog * grow, limit_ms)

    # --- step 2: the slack fit ------------------------------------------------------------
    def choose_planned(self, slack_ms: float, max_batch: int, plan: object) -> Decision | None:
        p: _Plan = plan  # type: ignore[assignment]
        limit = slack_ms if slack_ms < p.limit_ms else p.limit_ms
        acc = self.table.accuracy[p.cap]
        d = self._scan(limit, max_batch, p.need_per_ms, acc)
        if limit < slack_ms and (d is None or d.batch_size < p.need_per_ms * d.expected_latency_ms):
            # Nothing within the limit keeps up with the backlog: the whole slack may.
            d = self._scan(slack_ms, max_batch, p.need_per_ms, acc)
        return d

    def _scan(self, limit: float, max_batch: int, need: float, max_acc: float) -> Decision | None:
        """The largest batch that some option (accuracy <= max_acc) runs within ``limit`` fast
        enough for the backlog (b / latency >= need), with the most accurate such option; if
        no option is fast enough, the fitting option of highest throughput. One or two
        bisects per batch size on the per-batch fronts, largest batch first (usually the
        first batch tried answers)."""
        t, oh = self.table, self.overhead_ms
        fast, fast_b, fast_tp = -1, 0, 0.0
        for b in range(max_batch, 0, -1):
            f_lat = t.frontier_latency[b - 1]
            cut = b / need - oh if need > 0.0 else limit
            k = bisect_right(f_lat, limit if limit < cut else cut) - 1
            if k >= 0:
                # The most accurate entry within the cap's accuracy; where even the front's
                # fastest entry is more accurate than the cap, it is also faster: take it.
                ka = bisect_right(self._front_acc[b - 1], max_acc) - 1
                j = k if k < ka else (ka if ka > 0 else 0)
                return self._decisions[t.frontier_subnet[b - 1][j]][b - 1]
            if f_lat[0] <= limit:  # fits, but too slow for the backlog: remember the fastest
                tp = b / (f_lat[0] + oh)
                if tp > fast_tp:
                    fast, fast_b, fast_tp = t.frontier_subnet[b - 1][0], b, tp
        return self._decisions[fast][fast_b - 1] if fast >= 0 else None

    def choose(self, slack_ms: float, max_batch: int) -> Decision | None:
        """Without a queue to plan on: the most accurate option that fits the slack."""
        return self._scan(slack_ms, max_batch, 0.0, 2.0)

    def reserve_ms(self, queued: int) -> float:
        if not self.lookahead:
            return 0.0
        t = self.table
        k = queued - t.max_batch
        return t.frontier_latency[(k if k < t.max_batch else t.max_batch) - 1][0] + self.overhead_ms

    def describe(self) -> str:
        la = ", lookahead=True" if self.lookahead else ""
        return (f"rate_window_ms={self.rate_window_ms}, margin={self.margin}, batch_share={self.batch_share}"
                f"{la}, num_workers={self.num_workers}, {super().describe()}")
