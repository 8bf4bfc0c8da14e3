"""The policy interface shared by the live router and the simulator.

A policy is a pure decision function over (queue, now): it reads the queue's length,
earliest deadline and (only if present) accuracy floors, and answers which SubNet to run
on how many of the earliest-deadline requests. It never mutates the queue; the caller pops
``decision.batch_size`` requests with ``queue.pop_earliest`` (see :func:`take_batch`).
Keeping the pop outside lets the router and the simulator share the policy unchanged and
lets tests check a decision against the slack it was given.

Conventions every policy follows (all parameters, measured in docs/scheduling.md):

* slack = earliest deadline - now - ``overhead_ms`` (a known fixed cost per batch, e.g.
  dispatch and result transfer); a decision's expected_latency_ms includes that overhead.
* Infeasible slack (no option meets the earliest deadline): ``when_late="fastest"`` serves
  the policy's fastest option at batch 1; ``"drain"`` serves it at the largest batch the
  queue allows, so late requests stop blocking the ones behind them cheaply. Callers that
  shed instead call ``policy.shed(queue, now)`` before ``decide``; after that the head always
  has a feasible option.
* Which requests ``shed`` answers at once is ``shed_rule``: "hopeless" sheds only requests
  that cannot finish in time even on the fastest option at batch 1; "backlog" (default) also
  sheds, while more requests are queued than one batch, heads whose slack is below the
  fastest option's latency at the batch the queue could fill. Without it an overloaded EDF
  queue spirals: every head is nearly due, so every batch is tiny, so throughput collapses
  exactly when it is needed (measured in benchmarks/policies.py).
* Per-request ``min_accuracy``: a batch's floor is the highest floor among its requests.
  It is honoured when some option meeting it fits the slack; otherwise the floor is ignored
  (serving in time beats refusing; the answer reports the accuracy actually served).
"""
from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from bisect import bisect_right
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Literal

from superserve.scheduling.edf_queue import EdfQueue
from superserve.scheduling.latency_table import LatencyTable
from superserve.scheduling.profile import LatencyProfile
from superserve.scheduling.request import Request

WhenLate = Literal["fastest", "drain"]
ShedRule = Literal["hopeless", "backlog"]


class PolicyKind(str, enum.Enum):
    """The policies by name; :meth:`parse` is the one place a user's spelling is read."""

    SLACKFIT = "slackfit"
    SLACKFIT_PAPER = "slackfit-paper"
    MAXBATCH = "maxbatch"
    MAXACC = "maxacc"
    CLIPPER_PLUS = "clipper+"  # one fixed SubNet (needs its id)
    INFAAS = "infaas"

    @classmethod
    def parse(cls, name: "str | PolicyKind") -> "PolicyKind":
        """Case, '-' and '_' do not matter; "clipperplus", "clipper" and "fixed" mean clipper+."""
        if isinstance(name, PolicyKind):
            return name
        key = str(name).lower().replace("_", "").replace("-", "")
        kind = _POLICY_ALIASES.get(key)
        if kind is None:
            raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(k.value for k in cls)}")
        return kind

    @property
    def needs_subnet(self) -> bool:
        return self is PolicyKind.CLIPPER_PLUS


_POLICY_ALIASES = {k.value.replace("-", ""): k for k in PolicyKind} | {
    "clipperplus": PolicyKind.CLIPPER_PLUS, "clipper": PolicyKind.CLIPPER_PLUS, "fixed": PolicyKind.CLIPPER_PLUS}


@dataclass(frozen=True, slots=True)
class PolicyOptions:
    """The settings every policy shares (see the module docstring): the per-batch overhead,
    what to do when no option is feasible, the latency quantile planned with, which requests
    to shed, and how many workers serve the queue (only rate-aware policies read it)."""

    overhead_ms: float = 0.0
    when_late: WhenLate = "fastest"
    quantile: str = "p50"
    shed_rule: ShedRule = "backlog"
    num_workers: int = 1

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ValueError("num_workers must be >= 1")
        if self.shed_rule not in ("hopeless", "backlog"):
            raise ValueError(f"shed_rule must be 'hopeless' or 'backlog', not {self.shed_rule!r}")
        if self.quantile not in ("p50", "p99"):
            raise ValueError(f"quantile must be 'p50' or 'p99', not {self.quantile!r}")
        if self.when_late not in ("fastest", "drain"):
            raise ValueError(f"when_late must be 'fastest' or 'drain', not {self.when_late!r}")
        if self.overhead_ms < 0:
            raise ValueError("overhead_ms must be >= 0")
        object.__setattr__(self, "num_workers", int(self.num_workers))
        object.__setattr__(self, "overhead_ms", float(self.overhead_ms))


@dataclass(frozen=True, slots=True)
class Decision:
    """Run SubNet ``subnet_index`` on the ``batch_size`` earliest-deadline requests."""

    subnet_index: int  # index into LatencyProfile.subnets
    subnet_id: str
    batch_size: int
    expected_latency_ms: float  # profiled latency (the policy's quantile) plus the known overhead
    accuracy: float = 0.0
    late: bool = False  # True when the earliest deadline could not be met by any option


def take_batch(queue: EdfQueue, decision: Decision) -> list[Request]:
    """Pop the requests a decision covers (the earliest deadlines first)."""
    return queue.pop_earliest(decision.batch_size)


class Policy(ABC):
    """Base class: slack bookkeeping, floors and the late fallback; subclasses choose."""

    name: str = "policy"

    def __init__(self, profile: LatencyProfile, *, options: PolicyOptions | None = None, **common: Any) -> None:
        """``options``: the settings every policy shares; ``common``: any of its fields as
        keywords (``overhead_ms=0.2, num_workers=8``), over ``options``. Subclasses take
        their own parameters and pass ``**common`` on."""
        opts = options if options is not None else PolicyOptions()
        if common:
            opts = replace(opts, **common)  # an unknown keyword: TypeError, as a constructor
        self.options = opts
        self.num_workers = opts.num_workers
        self.shed_rule = opts.shed_rule
        self.profile = profile
        # Plan with p50 (fills the slack; right when latencies are steady) or p99 (a margin
        # for latency noise: fewer late answers, a little less accuracy).
        self.quantile = opts.quantile
        self.table = LatencyTable.from_profile(profile, opts.quantile)
        self.overhead_ms = opts.overhead_ms
        self.when_late = opts.when_late
        t = self.table
        # Decisions are immutable: build each (SubNet, batch) once, hand out the same object.
        self._decisions = tuple(
            tuple(Decision(s, t.ids[s], b + 1, t.latency_ms[s][b] + self.overhead_ms, t.accuracy[s])
                  for b in range(t.max_batch))
            for s in range(t.num_subnets))
        # _efficient[s][b-1]: the batch <= b with the highest throughput (ties: the larger).
        # Throughput is a matter of typical batch times: read it from the p50 column even
        # when deadlines are planned on p99, whose per-size noise (a p99 that jumps 30 % from
        # batch 4 to 5, then barely moves to 6) would make the planner run batches of 4 out
        # of queues of 5 (measured live: a tenth of the largest SubNet's throughput lost).
        typical = t if opts.quantile == "p50" else LatencyTable.from_profile(profile, "p50")
        eff = []
        for s, row in enumerate(typical.latency_ms):
            out, best, best_tp = [], 1, 0.0
            for b in range(1, t.max_batch + 1):
                tp = b / (row[b - 1] + self.overhead_ms)
                if tp >= best_tp:
                    best, best_tp = b, tp
                out.append(best)
            eff.append(tuple(out))
        self._efficient = tuple(eff)
        self._late_decisions = tuple(
            tuple(Decision(s, t.ids[s], b + 1, t.latency_ms[s][b] + self.overhead_ms, t.accuracy[s], True)
                  for b in range(t.max_batch))
            for s in range(t.num_subnets))

    # --- what subclasses provide -----------------------------------------------------------
    @abstractmethod
    def choose(self, slack_ms: float, max_batch: int) -> Decision | None:
        """Best option fitting ``slack_ms`` with at most ``max_batch`` requests, or None."""

    def choose_with_floor(self, slack_ms: float, max_batch: int, floor: float) -> Decision | None:
        """Like :meth:`choose` restricted to SubNets with accuracy >= floor. The default
        ranks feasible options by :meth:`floor_rank` (slow path; floors are rare)."""
        t, best, best_rank = self.table, None, None
        for s in self.allowed_subnets():
            if t.accuracy[s] < floor:
                continue
            n = bisect_right(t.latency_ms[s], slack_ms, 0, max_batch)
            if n == 0:
                continue
            rank = self.floor_rank(s, n)
            if best_rank is None or rank > best_rank:
                best, best_rank = self._decisions[s][n - 1], rank
        return best

    def floor_rank(self, s: int, n: int) -> tuple:
        return (self.table.accuracy[s], n)

    def allowed_subnets(self) -> range | tuple[int, ...]:
        return range(self.table.num_subnets)

    @property
    def fallback_subnet(self) -> int:
        """The fastest SubNet this policy may run (used when the slack is infeasible)."""
        return self.table.fastest_subnet

    def speed_subnets(self) -> range | tuple[int, ...]:
        """The SubNets whose speed bounds shedding and admission: a request is given up only
        when none of them could serve it in time (one-model baselines: their own model)."""
        return self.allowed_subnets()

    @cached_property
    def fastest_ms(self) -> tuple[float, ...]:
        """fastest_ms[b-1]: the shortest time (overhead included) in which this policy can
        serve a batch of b, over :meth:`speed_subnets`. Not one SubNet's row: the SubNet
        fastest at batch 1 is not the fastest at 16 (measured: 0.61 vs 0.73 ms at batch 1,
        2.33 vs 1.99 ms at 16), and shedding on one row gives up requests another could serve."""
        lat, speed = self.table.latency_ms, self.speed_subnets()
        return tuple(min(lat[s][b] for s in speed) + self.overhead_ms for b in range(self.table.max_batch))

    @cached_property
    def peak_rate_per_ms(self) -> float:
        """The most requests per ms one worker can finish (best SubNet and batch, as planned)."""
        lat, oh = self.table.latency_ms, self.overhead_ms
        return max((b + 1) / (lat[s][b] + oh) for s in self.speed_subnets() for b in range(self.table.max_batch))

    # --- the interface -------------------------------------------------------------------
    @property
    def min_service_s(self) -> float:
        """The shortest time any decision of this policy takes: a request with less time left
        than this cannot be served in time (pass to ``EdfQueue.drop_expired``)."""
        return self.fastest_ms[0] / 1000.0

    def shed(self, queue: EdfQueue, now: float) -> list[Request]:
        """Remove and return the requests to answer at once as "cannot meet the deadline"
        (see ``shed_rule``); call before :meth:`decide` when shedding."""
        out = queue.drop_expired(now, self.min_service_s)
        if self.shed_rule == "backlog" and len(queue) > 1:
            fastest, bmax = self.fastest_ms, self.table.max_batch
            while queue:
                n = len(queue)
                need_ms = fastest[(n if n < bmax else bmax) - 1]
                if queue.earliest_deadline >= now + need_ms / 1000.0:
                    break
                out += queue.pop_earliest(1)
        return out

    def decide(self, queue: EdfQueue, now: float, workers: int | None = None) -> Decision | None:
        """Decide for a free worker; None only when the queue is empty. ``workers``: how many
        workers serve this queue now (None: the policy's own ``num_workers``); only
        rate-aware policies read it."""
        n = len(queue)
        if n == 0:
            return None
        # + 1 ns: deadlines and clocks are float seconds; an option that fits exactly must not
        # be lost to rounding (the simulator judges "in time" with the same tolerance).
        slack_ms = (queue.earliest_deadline - now) * 1000.0 - self.overhead_ms + 1e-6
        nmax = n if n < self.table.max_batch else self.table.max_batch
        floor = queue.max_accuracy_floor(nmax) if queue.has_accuracy_floors else 0.0
        floor = max(floor, self.policy_floor)
        plan = self.plan(queue, now, workers or self.num_workers)
        reserve_ms = self.reserve_ms(n) if n > nmax else 0.0
        d = None
        if reserve_ms > 0.0:  # first try to leave room for the requests behind this batch
            d = self._pick(slack_ms - reserve_ms, nmax, floor, plan)
            if d is not None and d.accuracy < floor:
                d = None  # the floor may still be met with the whole slack
        if d is None:
            d = self._pick(slack_ms, nmax, floor, plan)
        if d is None:
            s = self.fallback_subnet
            return self._late_decisions[s][(nmax if self.when_late == "drain" else 1) - 1]
        # The largest batch is not assumed best: where a smaller batch of the same SubNet
        # serves more requests per second (measured: PyTorch switches its 1x1-convolution
        # kernel at batch 16 on one thread, docs/profiling.md), run that one.
        b = self._efficient[d.subnet_index][d.batch_size - 1]
        return d if b == d.batch_size else self._decisions[d.subnet_index][b - 1]

    def _pick(self, slack_ms: float, nmax: int, floor: float, plan: object) -> Decision | None:
        d = self.choose(slack_ms, nmax) if plan is None else self.choose_planned(slack_ms, nmax, plan)
        if floor > 0.0 and (d is None or d.accuracy < floor):
            d = self.choose_with_floor(slack_ms, nmax, floor) or d  # floors are best effort
        return d

    def plan(self, queue: EdfQueue, now: float, workers: int) -> object:
        """What a queue- or rate-aware policy reads from the queue before choosing (None: the
        choice depends on the slack alone)."""
        return None

    def choose_planned(self, slack_ms: float, max_batch: int, plan: object) -> Decision | None:
        return self.choose(slack_ms, max_batch)

    policy_floor: float = 0.0  # a floor the policy itself imposes (INFaaS)

    lookahead: bool = False  # policies that offer it set it per instance

    def reserve_ms(self, queued: int) -> float:
        """Slack to keep free for the requests queued behind a full batch (0: the paper's
        rule, only the earliest request's slack counts). With ``lookahead``: one batch of
        the fastest SubNet for the requests behind (the head of that batch size's front)."""
        if not self.lookahead:
            return 0.0
        t = self.table
        k = queued - t.max_batch
        return t.frontier_latency[(k if k < t.max_batch else t.max_batch) - 1][0] + self.overhead_ms

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"

    def describe(self) -> str:
        q = "" if self.quantile == "p50" else f", quantile={self.quantile!r}"
        r = "" if self.shed_rule == "backlog" else f", shed_rule={self.shed_rule!r}"
        return f"overhead_ms={self.overhead_ms}, when_late={self.when_late!r}{q}{r}"
