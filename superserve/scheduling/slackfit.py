"""SlackFit that sees the queue and the rate: the most accurate SubNet the load can afford,
at the largest batch that fits the slack.

The paper's rule (``slackfit-paper``) looks only at the head request's slack. With an 11x
throughput range across the served SubNets and a slack that often exceeds the largest
SubNet's batch time, it picks large SubNets exactly when only small ones keep up: the queue
behind the head grows, and a burst then meets slow batches (docs/scheduling.md, section 6).

This rule decides in two steps, each a handful of bisects (2-3 us with thousands queued):

0. **The sustained load.** u = the rate over ``long_window_ms`` against the top capacity
   (the best throughput of any SubNet). It bounds how long a batch may hold a worker (a
   burst that starts meanwhile finds the worker busy; measured: at the start of a burst after
   a lull, 4-14 ms batches of accurate SubNets on every worker cost 0.1-0.4 points of
   attainment near capacity): from the whole SLO at u = 0 down to the top-throughput option's
   own batch T at u = 1, T + ``commit_share`` x (1 - u) x (SLO - T). Measured from T, not
   from zero, so that where one batch has a large fixed cost (a GPU: T is 44 % of the SLO in
   the paper's setting) the limit still leaves room for batches worth running. The stream's
   burstiness shortens it further: the part above T is divided by 1 + u^2 x min(CV^2 - 1,
   ``burst_cap``), CV^2 the recent inter-arrival gaps' (``EdfQueue.interarrival_cv2``): a
   Poisson stream keeps the whole limit, a bursty one near capacity a fifth to a third, and at
   light load burstiness costs nothing (u^2).
1. **The cap (the plan).** Once more than ``gate`` x workers x max_batch requests are queued,
   or u >= ``floor_from`` (below both, a queue the fleet clears in about one round of
   batches at a load well below capacity, the cap is the most accurate SubNet and the slack
   alone decides, as in the paper), the demand per worker is
   what a capacity c must cover if the recent arrival rate r (over ``rate_window_ms``) goes
   on for a horizon H of ``horizon_slos`` x the SLO: the queue then holds n + (r - c) H per
   worker, to be cleared before its latest deadline, ``window`` ms away, so
   c >= (n + r H) / (H + window). A longer SLO absorbs more of a burst; a burst that lasts
   weighs as its full rate; the horizon in SLOs keeps the rule free of the profile's scale.
   Near the top capacity a floor applies: the rate over ``long_window_ms`` (the sustained
   load), once it reaches ``floor_from`` x the fastest SubNet's capacity, so that a lull
   inside a busy period does not commit workers to SubNets the load cannot afford.
   ``margin`` raises the demand.
   A burst ``reserve`` shortens the window by reserve x u / (1 - u) top-throughput batches
   / sqrt(workers): without it the plan lets the queue wait grow to the whole SLO whenever
   the rate stays just below capacity, and a rate that keeps rising then misses (measured on
   the Azure LLM trace at 0.9 x C_small); more workers smooth the queue and need less.
   ``burst_memory`` adds the recent worst wait of a *fast virtual queue*: the queue the
   fastest fixed SubNet would have had on the same arrivals (a fluid queue drained at the
   top capacity), its peak decaying over ``long_window_ms``. After a burst even the fastest
   fleet needed 10 ms to absorb, the plan keeps 10 ms of the window free for the next one,
   so a lull between on/off bursts is not spent on accuracy the next burst takes back (with
   interest: every batch of a slower SubNet during a burst above capacity adds to a backlog
   the fastest fleet would not have had). Both reserves count for an SLO equal to the most
   accurate SubNet's best-throughput batch, and shrink by that over the SLO as the SLO grows
   (``reserve_by_slo``): a longer SLO absorbs a burst by itself.
   The cap is the most accurate SubNet whose *capacity* covers it: its best throughput,
   b / latency(b), over the batches whose latency fits ``batch_share`` of the SLO, on measured
   numbers (where batch 16 costs more per request than 15, 15 counts). ``horizon_slos=0`` is
   the earlier rule, kept for ablation: the larger of ``rate_weight`` x r and n / window.
2. **The choice.** The largest batch that some option no slower than the cap runs within the
   head's slack, fast enough for the backlog (b / latency >= the backlog's rate per worker),
   with the most accurate such option; if no fitting option is fast enough, the fitting
   option of highest throughput (what maximises the requests served in time under overload).

Light load leaves the cap at the most accurate SubNet and the choice is the paper's (largest
batch, then accuracy, within the slack); a burst raises the demand through the queue at once
and through the rate as it lasts, and the cap drops to SubNets that keep up.
The defaults were chosen on benchmarks/grid.py's cells (docs/scheduling.md, section 6).
"""
from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

from superserve.scheduling.profile import LatencyProfile
from superserve.scheduling.edf_queue import EdfQueue
from superserve.scheduling.policy import Decision, Policy

DEFAULT_RATE_WINDOW_MS = 10.0
DEFAULT_RATE_WEIGHT = 0.85
DEFAULT_MARGIN = 0.0
DEFAULT_BATCH_SHARE = 1.0
DEFAULT_GATE = 0.5
DEFAULT_HORIZON_SLOS = 3.0
DEFAULT_LONG_WINDOW_MS = 250.0
DEFAULT_LONG_WEIGHT = 1.0
DEFAULT_FLOOR_FROM = 0.9
DEFAULT_COMMIT_SHARE = 1.0
DEFAULT_RESERVE = 3.0
DEFAULT_BURST_CAP = 4.0
DEFAULT_BURST_MEMORY = 1.0


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
                 margin: float = DEFAULT_MARGIN, rate_weight: float = DEFAULT_RATE_WEIGHT, gate: float = DEFAULT_GATE,
                 batch_share: float = DEFAULT_BATCH_SHARE, horizon_slos: float = DEFAULT_HORIZON_SLOS,
                 long_window_ms: float = DEFAULT_LONG_WINDOW_MS, long_weight: float = DEFAULT_LONG_WEIGHT,
                 floor_from: float = DEFAULT_FLOOR_FROM, commit_share: float = DEFAULT_COMMIT_SHARE,
                 reserve: float = DEFAULT_RESERVE, burst_cap: float = DEFAULT_BURST_CAP,
                 burst_memory: float = DEFAULT_BURST_MEMORY, reserve_by_slo: bool = True,
                 lookahead: bool = False, **common: Any) -> None:
        super().__init__(profile, **common)  # options= / the PolicyOptions fields (num_workers, ...)
        if rate_window_ms <= 0 or long_window_ms <= 0:
            raise ValueError("rate_window_ms and long_window_ms must be > 0")
        if min(margin, rate_weight, gate, long_weight, horizon_slos, floor_from, commit_share, reserve, burst_cap,
               burst_memory) < 0:
            raise ValueError("margin, rate_weight, gate, long_weight, horizon_slos, floor_from, commit_share, "
                             "reserve, burst_cap and burst_memory must be >= 0")
        if not 0 < batch_share <= 1:
            raise ValueError("batch_share must be in (0, 1]")
        self.rate_window_ms = float(rate_window_ms)
        self.rate_weight = float(rate_weight)
        self.margin = float(margin)
        self.gate = float(gate)
        self.batch_share = float(batch_share)
        self.long_window_ms = float(long_window_ms)
        self.long_weight = float(long_weight)
        self.floor_from = float(floor_from)
        self.horizon_slos = float(horizon_slos)
        self.commit_share = float(commit_share)
        self.reserve = float(reserve)
        self.burst_cap = float(burst_cap)
        self.lookahead = bool(lookahead)
        self.burst_memory = float(burst_memory)
        self.reserve_by_slo = bool(reserve_by_slo)
        # The fast virtual queue (see _fast_backlog_ms): queue id, time, arrivals seen, backlog, peak.
        self._vq: tuple[int, float, int, float, float] | None = None
        t, oh = self.table, self.overhead_ms
        # Latency with the known overhead: what a decision really costs.
        self._lat = tuple(tuple(v + oh for v in row) for row in t.latency_ms)
        fast_row = self._lat[t.fastest_subnet]
        self._fast_batch_ms = max(fast_row)  # the last batch of a drain, at worst
        # The top-throughput option and its batch time: the shortest commitment worth
        # planning with, and the unit of the burst reserve.
        best = [(self._efficient[s][-1] / row[self._efficient[s][-1] - 1], -row[self._efficient[s][-1] - 1])
                for s, row in enumerate(self._lat)]
        self._top_batch_ms = -max(best)[1]
        self._stairs: dict[int, _Staircase] = {}
        acc = t.num_subnets - 1
        self._accurate_batch_ms = self._lat[acc][self._efficient[acc][-1] - 1]

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
        n = len(queue)
        head = queue.peek()
        slo_ms = (head.deadline - head.arrival) * 1000.0  # type: ignore[union-attr]
        # The backlog must be served before the latest queued deadline, its last batch too
        # (one batch holds it all: the head's slack already bounds that batch).
        window = (queue.latest_deadline - now) * 1000.0
        if n > self.table.max_batch:
            window -= self._fast_batch_ms
        grow = (1.0 + self.margin) / workers
        backlog = (n / window if window > 0.0 else float("inf")) * grow
        # The sustained load u: the rate over long_window_ms against the top capacity.
        sustained = queue.arrival_rate(now, self.long_window_ms / 1000.0,
                                       self.rate_window_ms / 1000.0) / 1000.0 * grow  # per ms, per worker
        top = -self._staircase(slo_ms).neg_capacity[0]
        u = sustained / top if top > 0.0 else 1.0
        # How long a batch may hold a worker: batch_share of the SLO, and under a sustained
        # load u only the top-throughput batch T plus commit_share x (1 - u) of the rest (a
        # burst that starts meanwhile finds the worker busy), less on a bursty stream.
        limit_ms = self.batch_share * slo_ms
        top_ms = self._top_batch_ms
        risk_ms = top_ms + self.commit_share * (1.0 - u) * (slo_ms - top_ms)
        cv2 = queue.interarrival_cv2
        if cv2 > 1.0 and self.burst_cap > 0.0:
            risk_ms = top_ms + (risk_ms - top_ms) / (1.0 + u * u * min(cv2 - 1.0, self.burst_cap))
        if risk_ms < limit_ms:
            limit_ms = risk_ms if risk_ms > self._top_batch_ms else self._top_batch_ms
        st = self._staircase(limit_ms)
        if n <= self.gate * workers * self.table.max_batch and u < self.floor_from:
            return _Plan(self.table.num_subnets - 1, backlog, limit_ms)
        # A reserve for the next burst: plan to clear the backlog this much before the window
        # ends, more as u nears 1 (u / (1 - u) top batches), less with more workers (their
        # queue is smoother): without it the plan lets the queue wait grow to the whole SLO
        # whenever the rate stays just below capacity, and a rising rate then misses. Plus the
        # recent worst wait of the fast virtual queue (burst_memory): room for the bursts this
        # stream has shown. Both count for an SLO of the most accurate SubNet's batch time and
        # shrink as the SLO grows past it (a longer SLO absorbs a burst by itself).
        reserve = 0.0
        if self.reserve > 0.0 and u > 0.0:
            reserve = self.reserve * self._top_batch_ms * (u / (1.0 - u) if u < 0.95 else 19.0) / workers ** 0.5
        if self.burst_memory > 0.0:
            reserve += self.burst_memory * self._fast_backlog_ms(queue, now, top * workers / (1.0 + self.margin))
        if self.reserve_by_slo and slo_ms > self._accurate_batch_ms:
            reserve *= self._accurate_batch_ms / slo_ms
        window -= reserve
        rate = queue.arrival_rate(now, self.rate_window_ms / 1000.0) / 1000.0 * grow  # per ms, per worker
        if self.horizon_slos > 0.0:
            # The recent rate r goes on for horizon H: the queue then holds n + (r - c) H per
            # worker, which a capacity c must still clear within the window: c >= (n + r H) / (H + window).
            # A longer SLO absorbs more of a burst; a long burst weighs as its full rate.
            h = self.horizon_slos * slo_ms
            span = h + (window if window > 0.0 else 0.0)
            # No time left at all (a zero SLO, every deadline passed): only the fastest keeps up.
            demand = (n * grow + rate * h) / span if span > 0.0 else float("inf")
        else:  # the earlier rule (ablation): the larger of the weighted rate and the backlog's drain rate
            demand = max(self.rate_weight * rate, backlog)
        # Near the top capacity the sustained rate is a floor, so that a lull inside a busy
        # period does not commit workers to SubNets the mean load cannot afford.
        if u >= self.floor_from and self.long_weight * sustained > demand:
            demand = self.long_weight * sustained
        k = bisect_right(st.neg_capacity, -demand) - 1
        return _Plan(st.subnet[k if k >= 0 else 0], backlog, limit_ms)

    def _fast_backlog_ms(self, queue: EdfQueue, now: float, top_per_ms: float) -> float:
        """The recent worst wait of a virtual queue fed by the same arrivals and drained at the
        top capacity ``top_per_ms`` (the queue the fastest fixed SubNet would have had), its
        peak decaying over ``long_window_ms``: how long even the fastest fleet needed to absorb
        this stream's recent bursts. O(1): the arrivals since the last call enter at once (a
        fluid queue)."""
        vq = self._vq
        n = queue.arrivals
        if vq is None or vq[0] != id(queue) or now < vq[1] or n < vq[2]:
            self._vq = (id(queue), now, n, 0.0, 0.0)
            return 0.0
        dt_ms = (now - vq[1]) * 1000.0
        q = vq[3] + (n - vq[2]) - top_per_ms * dt_ms
        if q < 0.0:
            q = 0.0
        peak = vq[4] * math.exp(-dt_ms / self.long_window_ms) if dt_ms > 0.0 else vq[4]
        if q > peak:
            peak = q
        self._vq = (vq[0], now, n, q, peak)
        return peak / top_per_ms if top_per_ms > 0.0 else 0.0

    # --- step 2: the slack fit ------------------------------------------------------------
    def choose_planned(self, slack_ms: float, max_batch: int, plan: object) -> Decision | None:
        p: _Plan = plan  # type: ignore[assignment]
        limit = slack_ms if slack_ms < p.limit_ms else p.limit_ms
        d = self._scan(limit, max_batch, p.need_per_ms, p.cap)
        if limit < slack_ms and (d is None or d.batch_size < p.need_per_ms * d.expected_latency_ms):
            # Nothing within the limit keeps up with the backlog: the whole slack may.
            d = self._scan(slack_ms, max_batch, p.need_per_ms, p.cap)
        return d

    def _scan(self, limit: float, max_batch: int, need: float, cap: int) -> Decision | None:
        """The largest batch that some option no slower than the cap runs within ``limit``
        fast enough for the backlog (b / latency >= need), with the most accurate such
        option; if no option is fast enough, the fitting option of highest throughput. One
        bisect per batch size on the per-batch fronts, largest batch first (usually the first
        batch tried answers). On a front, latency and accuracy rise together, so the last
        entry no slower than the cap at that batch is at least as accurate as the cap."""
        t, oh = self.table, self.overhead_ms
        cap_lat = t.latency_ms[cap]
        fast, fast_b, fast_tp = -1, 0, 0.0
        for b in range(max_batch, 0, -1):
            f_lat = t.frontier_latency[b - 1]
            lim = limit if limit < cap_lat[b - 1] else cap_lat[b - 1]
            if need > 0.0 and b / need - oh < lim:
                lim = b / need - oh
            k = bisect_right(f_lat, lim) - 1
            if k >= 0:
                return self._decisions[t.frontier_subnet[b - 1][k]][b - 1]
            if f_lat[0] <= limit:  # fits, but too slow for the backlog: remember the fastest
                tp = b / (f_lat[0] + oh)
                if tp > fast_tp:
                    fast, fast_b, fast_tp = t.frontier_subnet[b - 1][0], b, tp
        return self._decisions[fast][fast_b - 1] if fast >= 0 else None

    def choose(self, slack_ms: float, max_batch: int) -> Decision | None:
        """Without a queue to plan on: the most accurate option that fits the slack."""
        return self._scan(slack_ms, max_batch, 0.0, self.table.num_subnets - 1)

    def describe(self) -> str:
        la = ", lookahead=True" if self.lookahead else ""
        return (f"rate_window_ms={self.rate_window_ms}, rate_weight={self.rate_weight}, margin={self.margin}, "
                f"gate={self.gate}, batch_share={self.batch_share}, horizon_slos={self.horizon_slos}, "
                f"long_window_ms={self.long_window_ms}, long_weight={self.long_weight}, floor_from={self.floor_from}, "
                f"commit_share={self.commit_share}, reserve={self.reserve}, burst_cap={self.burst_cap}, "
                f"burst_memory={self.burst_memory}, reserve_by_slo={self.reserve_by_slo}"
                f"{la}, num_workers={self.num_workers}, {super().describe()}")
