"""Online latency calibration: what this host takes per batch, measured while it serves.

A latency profile is measured on one machine on one day; the host that serves is never quite
that machine (another CPU, other tenants, thermal state, the router and the client sharing its
cores). The scheduler therefore plans on a live estimate fed by every batch:

    expected(s, b) = speed x correction[s] x profile(s, b) + overhead

* ``speed``: the host speed factor, the median of compute_ms / profile_p50(s, b) over the
  batches of the last ``window_s`` seconds (>1: this host is slower than the profile),
  weighted by the batch's profiled time (a ratio measured on a 20-ms batch matters more to a
  deadline than one measured on a 1-ms batch). The median shrugs off single slow batches (a
  page fault, a preempted thread); the window makes it follow drift within a few seconds.
* ``correction[s]``: how much SubNet ``s`` deviates from the host factor (some shapes suffer
  more from a smaller cache or fewer vector units than others): the median residual of its
  last batches, shrunk towards 1 while it has few samples, clamped.
* ``overhead``: per batch, what the deadline pays beyond the worker's compute (dispatch,
  pipe, the router's loop noticing the result): dispatch-to-result minus compute_ms, a high
  quantile over the window (never below the configured overhead).

The estimate is recomputed by :meth:`LatencyCalibrator.refresh`, which the owner calls on a
timer (the router every ``refresh_s`` of its clock, the simulator every ``refresh_s`` of
virtual time): never on the per-request path. :class:`CalibratedPlanner` turns a changed
estimate into a rebuilt policy (the profile rescaled, then the policy factory: about a
millisecond), so a decision costs what it cost without calibration.

:class:`ProfileCheck` is the start-up check: a few seconds of probe batches over a spread of
SubNets and batch sizes before traffic is admitted, so the first requests are already planned
on this host's speed, and a profile that is off by more than ``warn_rel`` is reported.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable

from superserve.scheduling.profile import LatencyProfile
from superserve.scheduling.policy import Policy

PolicyFactory = Callable[[LatencyProfile, float], Policy]  # (planning profile, overhead_ms) -> policy


@dataclass(frozen=True, slots=True)
class CalibrationConfig:
    window_s: float = 3.0  # batches older than this leave the host factor and the overhead
    # Slow-downs are followed faster than speed-ups: the planning factor is the larger of the
    # window's median and the median of the last ``fast_window_s`` (a burst makes the router
    # and the client take CPU from the workers exactly when batches matter most).
    fast_window_s: float = 0.5
    min_samples: int = 16  # fewer recent batches than this: the newest min_samples, however old
    max_samples: int = 1024  # cap per window (the deque's length)
    refresh_s: float = 0.25  # how often the estimate is recomputed (off the hot path)
    rebuild_rel: float = 0.02  # rebuild the policy when the host factor moves by more than this
    rebuild_overhead_ms: float = 0.1  # ... or the planning overhead by more than this
    overhead_quantile: float = 0.8  # of dispatch-to-result minus compute, over the window
    plan_quantile: float = 0.75  # plan on this quantile of the unexplained ratio (0.5: on the median)
    batch_buckets: int = 4  # batch sizes 1..max share a correction per bucket of equal width
    max_overhead_ms: float = 20.0  # a stalled loop must not make the planner give up on everything
    subnet_samples: int = 32  # residuals kept per SubNet
    subnet_prior: float = 8.0  # shrinkage: a correction counts n / (n + prior) of its residual
    max_correction: float = 1.5  # per-SubNet corrections are clamped to [1 / this, this]
    check_s: float = 2.0  # start-up check: seconds of probe batches
    warn_rel: float = 0.10  # the check warns when the host is off the profile by more than this

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.refresh_s <= 0 or self.check_s < 0:
            raise ValueError("calibration window_s and refresh_s must be > 0, check_s >= 0")
        if not 0.0 < self.overhead_quantile < 1.0:
            raise ValueError("overhead_quantile must be in (0, 1)")
        if self.min_samples < 1 or self.max_samples < self.min_samples:
            raise ValueError("calibration needs 1 <= min_samples <= max_samples")
        if self.max_correction < 1.0:
            raise ValueError("max_correction must be >= 1")


@dataclass(frozen=True, slots=True)
class LatencyEstimate:
    """The host as measured: what the policy plans on."""

    speed: float  # host factor: measured compute / profile p50 (> 1: slower than the profile)
    corrections: tuple[float, ...]  # per SubNet index, multiplies ``speed``
    overhead_ms: float  # planning overhead per batch (the quantile, floored at the configured one)
    overhead_p50_ms: float  # median dispatch-to-result minus compute
    samples: int  # batches behind the host factor
    at: float  # the clock time it was computed
    batch_corrections: tuple[float, ...] = (1.0,)  # per batch-size bucket, multiplies ``speed``
    noise: float = 1.0  # planning margin: the plan_quantile of what the model leaves unexplained
    max_batch: int = 16
    plan_speed: float = 1.0  # max(speed, the fast window's median): what plans use
    mean_speed: float = 1.0  # mean measured / profile over the window (throughput, for replays)
    overhead_mean_ms: float = 0.0
    # Since the previous refresh only (a replay of the host at the refresh's resolution; not
    # planned on: too few batches to be robust).
    speed_now: float = 1.0
    overhead_now_ms: float = 0.0

    def factor(self, subnet_index: int, batch_size: int | None = None) -> float:
        """The planning factor of (SubNet, batch): plan speed x noise margin x corrections."""
        f = self.plan_speed * self.noise * self.corrections[subnet_index]
        if batch_size is not None:
            f *= _batch_correction(batch_size, self.max_batch, self.batch_corrections)
        return f

    def to_dict(self) -> dict:
        return {"speed": round(self.speed, 4), "plan_speed": round(self.plan_speed, 4),
                "mean_speed": round(self.mean_speed, 4), "noise": round(self.noise, 4),
                "overhead_mean_ms": round(self.overhead_mean_ms, 4),
                "overhead_ms": round(self.overhead_ms, 4), "overhead_p50_ms": round(self.overhead_p50_ms, 4),
                "samples": self.samples,
                "batch_corrections": [round(x, 4) for x in self.batch_corrections],
                "corrections_min": round(min(self.corrections), 4) if self.corrections else 1.0,
                "corrections_max": round(max(self.corrections), 4) if self.corrections else 1.0}

    def plan_dict(self) -> dict:
        """What a policy is built from (the planning profile's factors and the planned
        overhead), exactly enough to rebuild the same policy elsewhere: the router logs it
        with every rebuild, and the simulated twin of a live run replays it."""
        return {"plan_speed": self.plan_speed, "noise": self.noise, "overhead_ms": self.overhead_ms,
                "corrections": list(self.corrections), "batch_corrections": list(self.batch_corrections),
                "speed": self.speed}


def estimate_from_plan(plan: dict, max_batch: int, at: float = 0.0) -> LatencyEstimate:
    """The inverse of :meth:`LatencyEstimate.plan_dict`: the planning fields as logged, the
    others (window statistics the policy never reads) at their defaults."""
    return LatencyEstimate(float(plan["speed"]), tuple(float(x) for x in plan["corrections"]),
                           float(plan["overhead_ms"]), 0.0, 0, at, tuple(float(x) for x in plan["batch_corrections"]),
                           float(plan["noise"]), max_batch, float(plan["plan_speed"]))


def _bucket(batch_size: int, max_batch: int, buckets: int) -> int:
    return min(buckets - 1, (batch_size - 1) * buckets // max_batch)


def _batch_correction(batch_size: int, max_batch: int, corrections: tuple[float, ...]) -> float:
    """The correction of one batch size: the buckets' corrections held at their centres and
    interpolated (geometrically) between them, not a step per bucket. A step would make the
    first size of a dearer bucket look less efficient than the last of the cheaper one, and
    the planner would then run smaller batches than it should (it picks the batch of highest
    throughput): on this host, sizes 5, 9 and 13 all but vanished under saturation."""
    n = len(corrections)
    if n == 1:
        return corrections[0]
    width = max_batch / n
    x = (batch_size - 0.5) / width - 0.5  # position in bucket-centre units
    if x <= 0.0:
        return corrections[0]
    if x >= n - 1:
        return corrections[-1]
    k = int(x)
    w = x - k
    return corrections[k] ** (1.0 - w) * corrections[k + 1] ** w


def _wmedian(pairs: list[tuple[float, float]], q: float = 0.5) -> float:
    """Weighted quantile (default: median) of (value, weight) pairs."""
    v = sorted(pairs)
    target = q * sum(w for _, w in v)
    acc = 0.0
    for x, w in v:
        acc += w
        if acc >= target:
            return x
    return v[-1][0]


def _median(values: list[float]) -> float:
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def _quantile(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


class LatencyCalibrator:
    """Collects per-batch measurements (O(1) each) and recomputes the estimate on demand.

    Model: log(measured / profile p50) = L (host, windowed) + B[batch bucket] + C[SubNet] +
    noise. B and C are medians of each sample's residual against the host factor of its
    time, so they keep what they learned while the host as a whole drifts; the planning
    margin ``noise`` is the ``plan_quantile`` of what is left over the window (a steady host
    gets ~1, a host whose batches are preempted at random gets more margin).
    """

    def __init__(self, profile: LatencyProfile, config: CalibrationConfig = CalibrationConfig(), *,
                 base_overhead_ms: float = 0.0, now: float = 0.0) -> None:
        self.profile = profile
        self.config = config
        self.base_overhead_ms = float(base_overhead_ms)
        self._p50 = [tuple(max(v, 1e-6) for v in s.latency_p50_ms) for s in profile.subnets]
        n = len(profile.subnets)
        self.max_batch = profile.max_batch
        self._nb = max(1, min(config.batch_buckets, self.max_batch))
        # (t, (log ratio, weight), SubNet, bucket)
        self._ratios: deque[tuple[float, tuple[float, float], int, int]] = deque(maxlen=config.max_samples)
        self._overheads: deque[tuple[float, float]] = deque(maxlen=config.max_samples)  # (t, ms)
        # Residual entries: [log ratio, weight, log host factor of its time (None before the
        # first estimate: filled in by the first refresh), bucket].
        self._residuals: list[deque[list]] = [deque(maxlen=config.subnet_samples) for _ in range(n)]
        self._bucket_res: list[deque[list]] = [deque(maxlen=4 * config.subnet_samples) for _ in range(self._nb)]
        self._log_speed: float | None = None  # of the current estimate
        self.observed = 0
        self.estimate = LatencyEstimate(1.0, (1.0,) * n, self.base_overhead_ms, 0.0, 0, now,
                                        (1.0,) * self._nb, 1.0, self.max_batch, 1.0, 1.0, 0.0)

    def observe(self, subnet_index: int, batch_size: int, compute_ms: float, total_ms: float | None,
                now: float) -> None:
        """One finished batch: the worker's compute time and, if known, dispatch-to-result."""
        if not compute_ms > 0.0 or not 1 <= batch_size <= len(self._p50[subnet_index]):
            return
        ref = self._p50[subnet_index][batch_size - 1]
        r = math.log(compute_ms / ref)
        k = _bucket(batch_size, self.max_batch, self._nb)
        self._ratios.append((now, (r, ref), subnet_index, k))
        e = [r, ref, self._log_speed, k]
        self._residuals[subnet_index].append(e)
        self._bucket_res[k].append(e)
        if total_ms is not None and total_ms >= compute_ms:
            self._overheads.append((now, total_ms - compute_ms))
        self.observed += 1

    def _recent(self, samples: deque, now: float) -> list:
        since = now - self.config.window_s
        vals = [v for v in samples if v[0] >= since]
        if len(vals) < self.config.min_samples:
            vals = list(samples)[-self.config.min_samples:]
        return vals

    def refresh(self, now: float) -> LatencyEstimate:
        """Recompute the estimate from the recent batches (O(window)); returns it."""
        c = self.config
        old = self.estimate
        recent = self._recent(self._ratios, now)
        if recent:
            log_speed = _wmedian([v[1] for v in recent])
        else:
            log_speed = self._log_speed if self._log_speed is not None else 0.0
        lim = math.log(c.max_correction)
        # Each residual is relative to the host factor of its time, so drift of the host as a
        # whole does not leak into the corrections.
        for group in (self._bucket_res, self._residuals):  # entries are shared; either may hold one longer
            for res in group:
                for e in res:
                    if e[2] is None:
                        e[2] = log_speed
        bcorr = []
        for res in self._bucket_res:
            n = len(res)
            d = _wmedian([(e[0] - e[2], e[1]) for e in res]) * n / (n + c.subnet_prior) if n else 0.0
            bcorr.append(max(-lim, min(lim, d)))
        corr = []
        for res in self._residuals:
            n = len(res)
            d = _wmedian([(e[0] - e[2] - bcorr[e[3]], e[1]) for e in res]) * n / (n + c.subnet_prior) if n else 0.0
            corr.append(max(-lim, min(lim, d)))
        noise, log_plan, mean_speed = 0.0, log_speed, old.mean_speed
        if recent:
            left = [(v[1][0] - log_speed - bcorr[v[3]] - corr[v[2]], v[1][1]) for v in recent]
            if c.plan_quantile > 0.5:
                noise = max(0.0, _wmedian(left, c.plan_quantile) - _wmedian(left))
            wsum = sum(w for _, w in left)
            mean_speed = math.exp(log_speed) * sum(math.exp(x) * w for x, w in left) / wsum
            since = now - c.fast_window_s
            fast = [(x + log_speed, w) for (x, w), v in zip(left, recent) if v[0] >= since]
            if len(fast) >= 4:
                log_plan = max(log_speed, _wmedian(fast))
        since_last = now - c.refresh_s
        last = [(math.exp(v[1][0]), v[1][1]) for v in recent if v[0] > since_last]
        speed_now = sum(x * w for x, w in last) / sum(w for _, w in last) if last else mean_speed
        over_last = [v[1] for v in self._overheads if v[0] > since_last]
        over = [v[1] for v in self._recent(self._overheads, now)]
        if over:
            q = min(_quantile(over, c.overhead_quantile), c.max_overhead_ms)
            overhead, over_p50, over_mean = max(self.base_overhead_ms, q), _median(over), sum(over) / len(over)
        else:
            overhead, over_p50, over_mean = old.overhead_ms, old.overhead_p50_ms, old.overhead_mean_ms
        self._log_speed = log_speed
        self.estimate = LatencyEstimate(math.exp(log_speed), tuple(math.exp(x) for x in corr), overhead, over_p50,
                                        len(recent), now, tuple(math.exp(x) for x in bcorr), math.exp(noise),
                                        self.max_batch, math.exp(log_plan), mean_speed, over_mean, speed_now,
                                        sum(over_last) / len(over_last) if over_last else over_mean)
        return self.estimate

    def planning_profile(self, estimate: LatencyEstimate | None = None) -> LatencyProfile:
        """The profile with every (SubNet, batch) latency, p50 and p99, multiplied by its factor."""
        e = estimate or self.estimate
        subs = []
        for i, s in enumerate(self.profile.subnets):
            f = [e.factor(i, b + 1) for b in range(len(s.latency_p50_ms))]
            subs.append(replace(s, latency_p50_ms=tuple(v * x for v, x in zip(s.latency_p50_ms, f)),
                                latency_p99_ms=tuple(v * x for v, x in zip(s.latency_p99_ms, f))))
        return LatencyProfile(tuple(subs), self.profile.device, dict(self.profile.meta, calibrated_speed=e.speed))


@dataclass
class CalibrationPoint:
    """One refresh, for the log, metrics and the simulator's replay of a live host."""

    t: float
    speed: float
    overhead_ms: float
    overhead_p50_ms: float
    samples: int
    rebuilt: bool
    plan_speed: float = 1.0
    mean_speed: float = 1.0
    overhead_mean_ms: float = 0.0
    speed_now: float = 1.0
    overhead_now_ms: float = 0.0


class CalibratedPlanner:
    """Owns a calibrator, a policy factory and the policy built from the latest estimate.

    ``refresh(now)`` (on a timer) recomputes the estimate and rebuilds the policy when the
    estimate moved enough to matter; the owner then installs ``planner.policy`` in its
    scheduling step. With ``enabled=False`` it only measures (the policy stays the
    profile's), which is how calibration is switched off without losing the figures.
    """

    def __init__(self, profile: LatencyProfile, factory: PolicyFactory, config: CalibrationConfig = CalibrationConfig(),
                 *, base_overhead_ms: float = 0.0, enabled: bool = True, now: float = 0.0,
                 keep_history: bool = True) -> None:
        self.config = config
        self.factory = factory
        self.enabled = enabled
        self.calibrator = LatencyCalibrator(profile, config, base_overhead_ms=base_overhead_ms, now=now)
        self.policy = factory(profile, base_overhead_ms)
        self.built = self.calibrator.estimate  # the estimate the current policy was built from
        self.rebuilds = 0
        self.next_refresh = now + config.refresh_s
        self.history: list[CalibrationPoint] | None = [] if keep_history else None

    def observe(self, subnet_index: int, batch_size: int, compute_ms: float, total_ms: float | None,
                now: float) -> None:
        self.calibrator.observe(subnet_index, batch_size, compute_ms, total_ms, now)

    def moved(self, est: LatencyEstimate) -> bool:
        b, c = self.built, self.config
        if abs(est.plan_speed * est.noise / (b.plan_speed * b.noise) - 1.0) > c.rebuild_rel:
            return True
        if abs(est.overhead_ms - b.overhead_ms) > c.rebuild_overhead_ms:
            return True
        return any(abs(x / y - 1.0) > c.rebuild_rel for x, y in zip(est.corrections, b.corrections))

    def refresh(self, now: float, *, force: bool = False) -> bool:
        """Recompute the estimate; True when a new policy was built (install it)."""
        self.next_refresh = now + self.config.refresh_s
        if self.calibrator.observed == 0:
            return False
        est = self.calibrator.refresh(now)
        rebuilt = False
        if self.enabled and (force or self.moved(est)):
            self.policy = self.factory(self.calibrator.planning_profile(est), est.overhead_ms)
            self.built = est
            self.rebuilds += 1
            rebuilt = True
        if self.history is not None:
            self.history.append(CalibrationPoint(now, est.speed, est.overhead_ms, est.overhead_p50_ms,
                                                 est.samples, rebuilt, est.plan_speed, est.mean_speed,
                                                 est.overhead_mean_ms, est.speed_now, est.overhead_now_ms))
        return rebuilt

    @property
    def estimate(self) -> LatencyEstimate:
        return self.calibrator.estimate


class ReplayedPlanner(CalibratedPlanner):
    """A planner that installs, at each time, the policy another planner had then: the
    simulated twin of a live run replays the router's own beliefs (its logged rebuilds)
    instead of re-learning them from the simulated host. A twin that re-learns plans on a
    host it sees as steadier than the live router saw it (the log-normal draws vs a host
    shared with the client under bursts), plans less conservatively, runs larger batches
    and so predicts more than the router could do with what it believed; replaying the
    beliefs leaves the twin to predict what the shared scheduling step makes of them.

    ``points``: (time, :meth:`LatencyEstimate.plan_dict`) in the simulator's clock,
    ascending; before the first, the first holds."""

    def __init__(self, base: CalibratedPlanner, points: list[tuple[float, dict]]) -> None:
        cal = base.calibrator
        super().__init__(cal.profile, base.factory, base.config, base_overhead_ms=cal.base_overhead_ms,
                         enabled=True, keep_history=False)
        if not points:
            raise ValueError("a replayed planner needs at least one logged plan")
        self._times = [t for t, _ in points]
        self._plans = [p for _, p in points]
        self._at = -1

    def observe(self, subnet_index: int, batch_size: int, compute_ms: float, total_ms: float | None,
                now: float) -> None:
        self.calibrator.observed += 1  # measured nothing: the beliefs come from the log

    def refresh(self, now: float, *, force: bool = False) -> bool:
        self.next_refresh = now + self.config.refresh_s
        i = max(0, bisect_right(self._times, now) - 1)
        if i == self._at:
            return False
        self._at = i
        est = estimate_from_plan(self._plans[i], self.calibrator.max_batch, now)
        self.calibrator.estimate = self.built = est
        self.policy = self.factory(self.calibrator.planning_profile(est), est.overhead_ms)
        self.rebuilds += 1
        return True


def probe_plan(profile: LatencyProfile, num_subnets: int = 6, batches: tuple[int, ...] = (1, 4, 8, 16)
               ) -> list[tuple[int, int]]:
    """(SubNet index, batch size) probes of the start-up check: ``num_subnets`` SubNets spread
    over the profile's accuracy order (the fastest and the most accurate included), each at
    the given batch sizes (capped at the profile's largest batch)."""
    n = len(profile.subnets)
    k = min(num_subnets, n)
    idx = sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)})
    bmax = profile.max_batch
    bs = sorted({min(b, bmax) for b in batches})
    return [(s, b) for s in idx for b in bs]


@dataclass
class ProfileCheck:
    """The start-up check of a profile against this host: the caller runs ``next_probe()``
    batches until ``done(now)``, feeding each result to the calibrator; ``report`` then says
    what was found (and whether it is worth a warning)."""

    profile: LatencyProfile
    config: CalibrationConfig = field(default_factory=CalibrationConfig)
    started: float = 0.0
    plan: list[tuple[int, int]] = field(default_factory=list)
    sent: int = 0

    def __post_init__(self) -> None:
        if not self.plan:
            self.plan = probe_plan(self.profile)

    def next_probe(self) -> tuple[int, int]:
        p = self.plan[self.sent % len(self.plan)]
        self.sent += 1
        return p

    def done(self, now: float) -> bool:
        # At least one full round of the plan, then until check_s has passed.
        return self.sent >= len(self.plan) and now - self.started >= self.config.check_s

    def report(self, est: LatencyEstimate, now: float) -> "CheckReport":
        off = est.speed - 1.0
        warned = abs(off) > self.config.warn_rel
        big = self.profile.largest
        b = self.profile.max_batch
        ref = big.latency_p50_ms[b - 1]
        i = [x.id for x in self.profile.subnets].index(big.id)
        measured = ref * est.factor(i, b) / est.noise
        word = "slower" if off > 0 else "faster"
        msg = (f"profile check: this host runs the profile's SubNets {max(est.speed, 1 / est.speed):.2f}x {word} "
               f"than the profile says ({est.samples} batches in {now - self.started:.1f} s; "
               f"{big.id} at batch {b}: profile {ref:.2f} ms, here {measured:.2f} ms; "
               f"per-batch overhead p50 {est.overhead_p50_ms:.2f} ms, planned {est.overhead_ms:.2f} ms)")
        if warned:
            msg += f"; WARNING: off by more than {100 * self.config.warn_rel:.0f} %: planning on the rescaled profile"
        return CheckReport(est.speed, est.mean_speed, est.overhead_ms, est.overhead_p50_ms, est.overhead_mean_ms,
                           est.samples, now - self.started, warned, msg)


@dataclass(frozen=True)
class CheckReport:
    speed: float
    mean_speed: float
    overhead_ms: float
    overhead_p50_ms: float
    overhead_mean_ms: float
    batches: int
    seconds: float
    warned: bool
    message: str

    def to_dict(self) -> dict:
        return {"speed": round(self.speed, 4), "mean_speed": round(self.mean_speed, 4),
                "overhead_ms": round(self.overhead_ms, 4), "overhead_p50_ms": round(self.overhead_p50_ms, 4),
                "overhead_mean_ms": round(self.overhead_mean_ms, 4), "batches": self.batches,
                "seconds": round(self.seconds, 2), "warned": self.warned, "message": self.message}
