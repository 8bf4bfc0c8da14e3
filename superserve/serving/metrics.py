"""Prometheus metrics of one server, in its own registry (no process-global state).

Hot-path cost: children are bound once; gauges that mirror state (queue length, workers)
are computed at scrape time instead of being updated per request.
"""
from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (re-exported for the REST app)
from prometheus_client.metrics_core import Metric

from superserve.outcome import SERVER_OUTCOMES

if TYPE_CHECKING:  # types only: the calibration module is not needed to count
    from superserve.scheduling.calibration import CheckReport, LatencyEstimate
    from superserve.scheduling.policy import Policy

_MS_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 200, 500, 1000, 5000)


class ServingMetrics:
    def __init__(self, subnet_accuracies: dict[str, float], max_batch: int) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter("superserve_requests", "Requests answered, by outcome", ["outcome"],
                                registry=r)
        self.by_outcome = {o: self.requests.labels(o.label) for o in SERVER_OUTCOMES}
        self.queue_ms = Histogram("superserve_queue_ms", "Time from arrival to dispatch (ms)",
                                  buckets=_MS_BUCKETS, registry=r)
        self.compute_ms = Histogram("superserve_compute_ms", "Worker compute time per batch (ms)",
                                    buckets=_MS_BUCKETS, registry=r)
        self.batch_size = Histogram("superserve_batch_size", "Requests per dispatched batch",
                                    buckets=tuple(range(1, max_batch + 1)), registry=r)
        accs = sorted(set(subnet_accuracies.values()))
        self.accuracy = Histogram("superserve_served_accuracy",
                                  "Profiled accuracy of the SubNet that served each request",
                                  buckets=tuple(accs) or (1.0,), registry=r)
        sub = self._by_subnet = Counter("superserve_subnet_requests", "Requests served, by SubNet", ["subnet_id"],
                                        registry=r)
        self.by_subnet = {sid: sub.labels(sid) for sid in subnet_accuracies}
        self.queue_length = Gauge("superserve_queue_length", "Requests waiting in the EDF queue", registry=r)
        self.workers = Gauge("superserve_workers", "Worker processes, by state", ["state"], registry=r)
        invalid = Counter("superserve_invalid_requests", "Requests refused before queueing (bad input, "
                          "no or wrong token, unknown model, too large), by HTTP status", ["status"], registry=r)
        self.invalid = {code: invalid.labels(str(code)) for code in (400, 401, 404, 408, 413)}
        self.cancelled = Counter("superserve_requests_cancelled", "Requests whose caller went away before the "
                                 "answer (their queue slot and input are freed at once)", registry=r)
        self.poison = Counter("superserve_poison_requests", "Requests answered 500 because workers kept dying "
                              "while running them (request_max_deaths)", registry=r)
        self.worker_deaths = Counter("superserve_worker_deaths", "Worker processes that died", registry=r)
        self.worker_restarts = Counter("superserve_worker_restarts", "Dead workers restarted by the supervisor",
                                       registry=r)
        self.worker_give_ups = Counter("superserve_worker_give_ups", "Worker slots not restarted any more "
                                       "(died too often within the window; see the server log)", registry=r)
        self.worker_recovery_s = Histogram("superserve_worker_recovery_seconds", "From a worker's death "
                                           "being seen to its replacement re-admitted warm (s)",
                                           buckets=(0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120),
                                           registry=r)

        # Calibration (superserve/scheduling/calibration.py): read at scrape time.
        self.speed_factor = Gauge("superserve_latency_speed_factor", "Live host speed factor: measured batch "
                                  "compute time / the profile's p50 (> 1: this host is slower than the profile)",
                                  registry=r)
        self.overhead_ms = Gauge("superserve_latency_overhead_ms", "Per-batch overhead the policy plans with "
                                 "(dispatch-to-result minus compute, high quantile over the window; ms)", registry=r)
        self.overhead_p50_ms = Gauge("superserve_latency_overhead_p50_ms", "Median per-batch overhead "
                                     "(dispatch-to-result minus compute; ms)", registry=r)
        self.calibration_samples = Gauge("superserve_calibration_samples", "Batches behind the live speed factor",
                                         registry=r)
        self.planned_speed = Gauge("superserve_policy_speed_factor", "Speed factor the current policy's tables "
                                   "were built with", registry=r)
        self.policy_rebuilds = Counter("superserve_policy_rebuilds", "Policies rebuilt from a recalibrated profile",
                                       registry=r)
        self.check_speed = Gauge("superserve_profile_check_speed_factor", "Start-up check: host speed factor "
                                 "against the shipped profile (> 1: slower)", registry=r)
        self.check_warning = Gauge("superserve_profile_check_warning", "1 when the start-up check found the "
                                   "host off the profile by more than the warning threshold", registry=r)

        self.response_margin = Gauge("superserve_response_margin_ms", "Planning margin before each deadline: the "
                                     "configured response margin plus the router loop's recent p99 lag (ms)",
                                     registry=r)

    def watch_calibration(self, estimate: Callable[[], LatencyEstimate], policy: Callable[[], Policy],
                          margin: Callable[[], float] | None = None) -> None:
        if margin is not None:
            self.response_margin.set_function(margin)
        self.speed_factor.set_function(lambda: estimate().speed)
        self.overhead_ms.set_function(lambda: estimate().overhead_ms)
        self.overhead_p50_ms.set_function(lambda: estimate().overhead_p50_ms)
        self.calibration_samples.set_function(lambda: estimate().samples)
        self.planned_speed.set_function(lambda: float(policy().profile.meta.get("calibrated_speed", 1.0)))

    def add_subnets(self, subnet_accuracies: dict[str, float]) -> None:
        """Count the SubNets of a reloaded bundle too (the old ones keep their totals)."""
        for sid in subnet_accuracies:
            if sid not in self.by_subnet:
                self.by_subnet[sid] = self._by_subnet.labels(sid)

    def profile_checked(self, report: CheckReport) -> None:
        self.check_speed.set(report.speed)
        self.check_warning.set(1.0 if report.warned else 0.0)

    def watch(self, queue_length: Callable[[], float], workers_ready: Callable[[], float],
              workers_alive: Callable[[], float]) -> None:
        self.queue_length.set_function(queue_length)
        self.workers.labels("ready").set_function(workers_ready)
        self.workers.labels("alive").set_function(workers_alive)

    def observe_batch(self, subnet_id: str, accuracy: float, batch_size: int, compute_ms: float) -> None:
        self.compute_ms.observe(compute_ms)
        self.batch_size.observe(batch_size)
        self.by_subnet[subnet_id].inc(batch_size)

    def outcome_totals(self) -> dict[str, float]:
        """Requests answered so far, by outcome label. Collects the counter (tens of
        microseconds): for a once-a-second reader, never per request."""
        return {s.labels["outcome"]: s.value for m in self.requests.collect() for s in m.samples
                if s.name.endswith("_total")}

    def refused(self, status: int) -> None:
        child = self.invalid.get(status)
        if child is not None:
            child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


# The worker pool's metrics: one pool serves every model, so a server of several models
# exports them once, without a model label (from the first model's set, which the
# supervisor counts into).
POOL_METRICS = frozenset({"superserve_workers", "superserve_worker_deaths", "superserve_worker_restarts",
                          "superserve_worker_give_ups", "superserve_worker_recovery_seconds"})


class ModelsMetrics:
    """The ``/metrics`` page of a server of several SuperNets (superserve/serving/multi.py):
    each model counts into its own :class:`ServingMetrics`; the page shows every series of
    every model under the same metric names with a ``model`` label added (the pool's
    metrics, :data:`POOL_METRICS`, once and without one). A one-model server renders its
    :class:`ServingMetrics` as before, without the label."""

    def __init__(self, by_model: dict[str, ServingMetrics]) -> None:
        self.by_model = by_model
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ModelLabelled(by_model))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ModelLabelled:
    """A collector merging the models' registries, family by family, adding ``model``."""

    def __init__(self, by_model: dict[str, ServingMetrics]) -> None:
        self.by_model = by_model

    def collect(self):
        families: dict[str, Metric] = {}
        for k, (model, m) in enumerate(self.by_model.items()):
            for fam in m.registry.collect():
                pool = fam.name in POOL_METRICS
                if pool and k:
                    continue
                out = families.get(fam.name)
                if out is None:
                    out = families[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                for smp in fam.samples:
                    out.add_sample(smp.name, smp.labels if pool else {"model": model, **smp.labels},
                                   smp.value, smp.timestamp, smp.exemplar)
        return list(families.values())


def observe_many(hist: Histogram, values: Sequence[float]) -> None:
    """``hist.observe(v)`` for every value (one answered batch's), with one locked add per
    bucket touched instead of two per value: the per-request cost the front door's
    scheduler budget (docs/frontdoor.md) cannot afford. Uses prometheus_client's Histogram
    internals (``_upper_bounds``, ``_buckets``, ``_sum``), falling back to ``observe``."""
    bounds = getattr(hist, "_upper_bounds", None)
    buckets = getattr(hist, "_buckets", None)
    total = getattr(hist, "_sum", None)
    if bounds is None or buckets is None or total is None or len(values) < 2:
        for v in values:
            hist.observe(v)
        return
    counts = [0] * len(bounds)
    for v in values:
        counts[bisect_left(bounds, v)] += 1  # the first bucket with v <= its bound (+Inf last)
    total.inc(sum(values))
    for i, c in enumerate(counts):
        if c:
            buckets[i].inc(c)


def observe_same(hist: Histogram, value: float, n: int) -> None:
    """``hist.observe(value)`` ``n`` times (a batch's accuracy, one per request): one locked
    add for the bucket and one for the sum (falls back to ``observe``, as observe_many)."""
    bounds = getattr(hist, "_upper_bounds", None)
    buckets = getattr(hist, "_buckets", None)
    total = getattr(hist, "_sum", None)
    if bounds is None or buckets is None or total is None:
        for _ in range(n):
            hist.observe(value)
        return
    if n > 0:
        total.inc(value * n)
        buckets[bisect_left(bounds, value)].inc(n)
