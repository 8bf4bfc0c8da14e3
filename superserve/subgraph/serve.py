"""Batch-1 serving of a query stream on one accelerator with a weight buffer: which SubNet per
query, and (through the cache) which SubGraph stays on chip.

Why not ``superserve.sim.simulate``: its policies plan with one latency per (SubNet, batch),
fixed for the run; here a SubNet's latency depends on what the buffer holds, which changes
after every query (LRU) or every few queries (the adaptive SubGraph), and SubGraph loads stall
the accelerator. So this is a small dedicated loop on a virtual clock, with the project's EDF
queue and requests, and it reports through the simulator's :class:`SimResult` (same SLO
attainment and served-accuracy definitions).

The policy (:func:`choose`), the same for every cache:
* shed queued queries that cannot finish in time even on the fastest SubNet (as the router's
  "hopeless" rule), then look at the earliest deadline;
* budget = min over the first ``lookahead`` queued queries of (deadline_k - now) / k: the
  time per query that keeps the k-th in time if every query took as long (the head's slack
  alone overcommits under a backlog);
* an accuracy floor is honoured whenever some SubNet meeting it fits the head's slack;
* among SubNets within the budget (or, if none, within the head's slack) take the most
  accurate, then trade up to ``accuracy_slack`` of accuracy for the fewest off-chip bytes
  (locality), never below the floor. With no cache the trade still prefers lighter SubNets.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from superserve.scheduling.edf_queue import EdfQueue
from superserve.scheduling.request import Request
from superserve.sim.result import IN_TIME, LATE, SHED, SimResult
from superserve.subgraph.caches import WeightCache
from superserve.subgraph.catalog import Catalog
from superserve.subgraph.cost import Accelerator, CostTable, latency_s

_EPS_S = 1e-12


@dataclass(frozen=True)
class Queries:
    """Per query: arrival (s), latency budget (s) and accuracy floor (0: none)."""

    arrival: np.ndarray
    slo_s: np.ndarray
    min_accuracy: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.arrival.shape[0]
        if self.slo_s.shape != (n,) or self.min_accuracy.shape != (n,):
            raise ValueError("one SLO and one floor per query")
        if n and np.any(np.diff(self.arrival) < 0):
            raise ValueError("arrivals must be sorted")


@dataclass(frozen=True)
class PolicyConfig:
    accuracy_slack: float = 0.002  # accuracy (fraction) traded at most for fewer off-chip bytes
    lookahead: int = 16  # queued queries the budget protects

    def __post_init__(self) -> None:
        if not 0 <= self.accuracy_slack < 1 or self.lookahead < 1:
            raise ValueError("accuracy_slack must lie in [0, 1) and lookahead be >= 1")


def choose(latency: np.ndarray, accuracy: np.ndarray, fetch: np.ndarray, head_slack_s: float,
           budget_s: float, floor: float, accuracy_slack: float) -> int:
    """The SubNet for the head query (see the module docstring). ``latency`` and ``fetch``
    are what each SubNet would take and fetch now."""
    fits = latency <= head_slack_s + _EPS_S
    if floor > 0.0:
        meets = fits & (accuracy >= floor)
        if meets.any():
            fits = meets
    if not fits.any():
        return int(np.argmin(latency))
    within = fits & (latency <= budget_s + _EPS_S)
    pool = within if within.any() else fits
    best = accuracy[pool].max()
    near = pool & (accuracy >= best - accuracy_slack - 1e-12)
    idx = np.nonzero(near)[0]
    # fewest bytes, then most accurate, then fastest
    return int(idx[np.lexsort((latency[idx], -accuracy[idx], fetch[idx]))[0]])


@dataclass
class RunResult:
    sim: SimResult
    offchip_bytes: float  # every byte fetched: queries' weights, private bytes, SubGraph loads
    load_bytes: float  # of which SubGraph loads
    onchip_bytes: float  # weight bytes read from the buffer (every byte used, once)
    loads: int
    served: int
    service_s: np.ndarray  # per served query: the accelerator time it took (no queueing, no loads)

    def latencies_ms(self) -> np.ndarray:
        ok = self.sim.subnet >= 0
        return (self.sim.finish[ok] - self.sim.arrival[ok]) * 1000.0

    def summary(self, acc: Accelerator) -> dict[str, Any]:
        lat = self.latencies_ms()
        per = max(self.served, 1)
        return {
            "latency_mean_ms": float(lat.mean()) if lat.size else math.nan,
            "latency_p99_ms": float(np.percentile(lat, 99)) if lat.size else math.nan,
            "service_mean_ms": float(self.service_s.mean() * 1000.0) if self.served else math.nan,
            "service_p99_ms": float(np.percentile(self.service_s, 99) * 1000.0) if self.served else math.nan,
            "offchip_bytes_per_query": self.offchip_bytes / per,
            "offchip_energy_uj_per_query": self.offchip_bytes * acc.offchip_pj_per_byte * 1e-6 / per,
            "total_weight_energy_uj_per_query": (self.offchip_bytes * acc.offchip_pj_per_byte
                                                 + self.onchip_bytes * acc.onchip_pj_per_byte) * 1e-6 / per,
            "mean_accuracy": self.sim.mean_accuracy,
            "slo_attainment": self.sim.slo_attainment,
            "served": self.served, "shed": self.sim.count(SHED), "late": self.sim.count(LATE),
            "subgraph_loads": self.loads, "subgraph_load_bytes_per_query": self.load_bytes / per,
        }


def serve(catalog: Catalog, acc: Accelerator, cache: WeightCache, queries: Queries,
          policy: PolicyConfig = PolicyConfig()) -> RunResult:
    """Run the query stream through one accelerator; every query gets exactly one outcome."""
    table = CostTable.build(catalog, acc)
    accuracy = catalog.accuracy
    private = table.private_bytes
    used_bytes = table.weight_bytes + private
    n = queries.arrival.shape[0]
    arr, dl = queries.arrival, queries.arrival + queries.slo_s
    finish = np.full(n, math.nan)
    subnet = np.full(n, -1, dtype=np.int64)
    outcome = np.full(n, int(SHED), dtype=np.int8)
    b_start: list[float] = []
    b_subnet: list[int] = []
    service: list[float] = []
    queue = EdfQueue()
    offchip = load_total = onchip = 0.0
    loads = served = 0
    planned_id, lat, fetch_total = None, None, None
    now, i = 0.0, 0
    while i < n or queue:
        if not queue:
            now = max(now, arr[i])
        while i < n and arr[i] <= now:
            queue.push(Request(i, float(arr[i]), float(dl[i]), float(queries.min_accuracy[i])))
            i += 1
        plan = cache.planned_fetch()
        if plan is not planned_id:  # the buffer changed what SubNets cost: re-plan
            planned_id = plan
            lat = latency_s(table, acc, plan)
            fetch_total = plan.sum(axis=1) + private
        for r in queue.drop_expired(now, float(lat.min())):
            finish[r.id] = now
        if not queue:
            continue
        head = queue.earliest(policy.lookahead)
        budget = min((r.deadline - now) / (k + 1) for k, r in enumerate(head))
        floor = queue.max_accuracy_floor(1) if queue.has_accuracy_floors else 0.0
        s = choose(lat, accuracy, fetch_total, head[0].deadline - now, budget, floor, policy.accuracy_slack)
        (r,) = queue.pop_earliest(1)
        fetched = cache.run(s)
        took = float(latency_s(table, acc, fetched[None], np.array([s]))[0])
        b_start.append(now)
        b_subnet.append(s)
        service.append(took)
        now += took
        finish[r.id], subnet[r.id] = now, s
        outcome[r.id] = int(IN_TIME) if now <= r.deadline + 1e-9 else int(LATE)
        offchip += float(fetched.sum() + private[s])
        onchip += float(used_bytes[s])
        served += 1
        loaded = cache.reconfigure()
        if loaded:
            loads += 1
            load_total += loaded
            offchip += loaded
            now += loaded / acc.offchip_bytes_per_s  # the accelerator stalls while the SubGraph loads
    sim = SimResult(arrival=arr.copy(), deadline=dl, finish=finish, subnet=subnet,
                    batch_size=(subnet >= 0).astype(np.int64), outcome=outcome,
                    batch_start=np.array(b_start), batch_subnet=np.array(b_subnet, dtype=np.int64),
                    batch_size_log=np.ones(len(b_subnet), dtype=np.int64),
                    batch_queue_len=np.zeros(len(b_subnet), dtype=np.int64),
                    batch_worker=np.zeros(len(b_subnet), dtype=np.int64), subnet_accuracy=accuracy,
                    subnet_ids=catalog.ids, params={"cache": cache.name, "buffer_bytes": cache.buffer_bytes,
                                                    "accelerator": acc.name})
    return RunResult(sim, offchip, load_total, onchip, loads, served, np.array(service))
