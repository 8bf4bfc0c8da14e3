"""Online latency calibration: the estimate (noise, drift, per-SubNet and per-batch shape),
the planner's rebuilds, calibration in the simulator on a host slower than its profile or
drifting during the run, and a live server that checks a wrong profile and says so."""
import json
import math
import urllib.request

import numpy as np
import pytest

from superserve.scheduling.profile import LatencyProfile
from superserve.scheduling import make_policy
from superserve.scheduling.calibration import (CalibratedPlanner, CalibrationConfig, LatencyCalibrator,
                                               ProfileCheck, probe_plan)
from superserve.sim import simulate
from superserve.workload import bursty

PROFILE = LatencyProfile.synthetic()


def feed(cal, rng, t0, t1, factor, *, n=400, subnets=None, overhead_ms=0.2, outliers=0.05):
    """Batches on a host running ``factor(t, s)`` x the profile, log-normal noise, a few
    10x outliers (preempted batches)."""
    subnets = subnets if subnets is not None else range(len(PROFILE.subnets))
    subnets = list(subnets)
    for t in np.linspace(t0, t1, n):
        s = int(rng.choice(subnets))
        b = int(rng.integers(1, PROFILE.max_batch + 1))
        ms = PROFILE.subnets[s].latency_p50_ms[b - 1] * factor(t, s) * math.exp(0.05 * rng.standard_normal())
        if rng.random() < outliers:
            ms *= 10
        cal.observe(s, b, ms, ms + overhead_ms, float(t))


def test_host_factor_is_robust_to_noise_and_outliers():
    rng = np.random.default_rng(0)
    cal = LatencyCalibrator(PROFILE)
    feed(cal, rng, 0.0, 3.0, lambda t, s: 1.3)
    est = cal.refresh(3.0)
    assert est.speed == pytest.approx(1.3, rel=0.03)
    assert est.overhead_p50_ms == pytest.approx(0.2, abs=0.01)
    assert all(c == pytest.approx(1.0, abs=0.06) for c in est.corrections)


def test_estimate_follows_drift_within_the_window():
    rng = np.random.default_rng(1)
    cal = LatencyCalibrator(PROFILE, CalibrationConfig(window_s=2.0))
    f = lambda t, s: 1.0 if t < 6.0 else 1.5  # noqa: E731
    feed(cal, rng, 0.0, 5.9, f, n=600)
    assert cal.refresh(5.9).speed == pytest.approx(1.0, rel=0.03)
    feed(cal, rng, 6.0, 10.0, f, n=400)
    est = cal.refresh(10.0)  # 4 s after the jump, 2-s window
    assert est.speed == pytest.approx(1.5, rel=0.03)


def test_per_subnet_corrections_survive_host_drift():
    rng = np.random.default_rng(2)
    cal = LatencyCalibrator(PROFILE)
    last = len(PROFILE.subnets) - 1
    # The largest SubNet runs 25 % slower than the rest, on a host that drifts.
    f = lambda t, s: (1.0 + 0.05 * t) * (1.25 if s == last else 1.0)  # noqa: E731
    for k in range(10):
        feed(cal, rng, k, k + 1, f, n=100, outliers=0.0)
        cal.refresh(k + 1.0)
    est = cal.estimate
    assert est.speed == pytest.approx(1.5, rel=0.05)
    assert est.factor(last) / est.speed / est.noise == pytest.approx(1.25, rel=0.06)
    assert est.factor(0) / est.speed / est.noise == pytest.approx(1.0, abs=0.06)
    prof = cal.planning_profile(est)
    b = PROFILE.max_batch
    assert prof.subnets[last].latency_p50_ms[b - 1] / PROFILE.subnets[last].latency_p50_ms[b - 1] \
        == pytest.approx(est.factor(last, b), rel=1e-9)


def test_planner_rebuilds_only_when_the_estimate_moves():
    built = []

    def factory(profile, overhead_ms):
        built.append(profile)
        return make_policy("slackfit", profile, overhead_ms=overhead_ms)

    pl = CalibratedPlanner(PROFILE, factory, base_overhead_ms=0.3)
    rng = np.random.default_rng(3)
    feed(pl.calibrator, rng, 0.0, 1.0, lambda t, s: 1.0, outliers=0.0, overhead_ms=0.1)
    pl.refresh(1.0)
    n0 = pl.rebuilds
    feed(pl.calibrator, rng, 1.0, 2.0, lambda t, s: 1.0, outliers=0.0, overhead_ms=0.1)
    pl.refresh(2.0)
    assert pl.rebuilds - n0 <= 1  # a steady host: (almost) no more rebuilds
    feed(pl.calibrator, rng, 2.0, 6.0, lambda t, s: 1.4, outliers=0.0, overhead_ms=0.1)
    assert pl.refresh(6.0) is True  # a 40 % slower host: a new policy ...
    big = PROFILE.largest
    assert pl.policy.table.latency_ms[-1][-1] > 1.3 * big.latency_p99_ms[-1]  # ... planning on it
    assert pl.policy.overhead_ms == pytest.approx(0.3)  # measured overhead below the configured floor
    off = CalibratedPlanner(PROFILE, factory, enabled=False)
    feed(off.calibrator, rng, 0.0, 3.0, lambda t, s: 1.4)
    assert off.refresh(3.0) is False and off.estimate.speed == pytest.approx(1.4, rel=0.05)


def test_profile_check_plan_spans_the_profile_and_reports():
    plan = probe_plan(PROFILE)
    subs = {s for s, _ in plan}
    assert 0 in subs and len(PROFILE.subnets) - 1 in subs and {b for _, b in plan} >= {1, PROFILE.max_batch}
    cal = LatencyCalibrator(PROFILE)
    chk = ProfileCheck(PROFILE, CalibrationConfig(check_s=1.0), started=0.0)
    t = 0.0
    while not chk.done(t):
        s, b = chk.next_probe()
        ms = PROFILE.subnets[s].latency_p50_ms[b - 1] * 1.2
        t += ms / 1000
        cal.observe(s, b, ms, ms + 0.1, t)
    rep = chk.report(cal.refresh(t), t)
    assert rep.speed == pytest.approx(1.2, rel=0.01) and rep.warned and "1.20x slower" in rep.message


def _planner(profile, calibrate=True, name="slackfit"):
    return CalibratedPlanner(profile, lambda p, o: make_policy(name, p, overhead_ms=o, quantile="p99"),
                             base_overhead_ms=0.3, enabled=calibrate)


def test_simulated_host_slower_than_its_profile_is_absorbed_by_calibration():
    wrong = PROFILE.scaled(0.85)  # claims the host ~18 % faster than it is
    big = PROFILE.largest.latency_p50_ms[-1]
    cap = PROFILE.max_batch / (big / 1000)
    tr = bursty(cap / 2, cap / 2, 8, 20, seed=0)
    slo = 2 * big
    kw = dict(num_workers=1, slo_ms=slo, latency="lognormal", overhead_ms=0.3, host_speed=1 / 0.85,
              queue_capacity=1024)
    blind = simulate(tr, wrong, _planner(wrong, calibrate=False), **kw)
    calibrated = simulate(tr, wrong, pl := _planner(wrong), **kw)
    assert calibrated.slo_attainment >= max(0.99, blind.slo_attainment)
    assert pl.estimate.speed == pytest.approx(1 / 0.85, rel=0.05)
    assert calibrated.params["calibration"]["rebuilds"] >= 1


def test_simulated_host_that_drifts_during_the_run():
    big = PROFILE.largest.latency_p50_ms[-1]
    cap = PROFILE.max_batch / (big / 1000)
    tr = bursty(cap / 2, cap / 2, 8, 30, seed=1)
    drift = lambda t: 1.0 if t < 10 else 1.5  # noqa: E731  (other tenants arrive at t = 10 s)
    kw = dict(num_workers=1, slo_ms=2 * big, latency="lognormal", overhead_ms=0.3, host_speed=drift,
              queue_capacity=1024)
    blind = simulate(tr, PROFILE, _planner(PROFILE, calibrate=False), **kw)
    calibrated = simulate(tr, PROFILE, pl := _planner(PROFILE), **kw)
    assert calibrated.slo_attainment >= max(0.99, blind.slo_attainment)
    assert pl.estimate.speed == pytest.approx(1.5, rel=0.06)
    # What it served after the drift is faster than before it.
    after = tr.arrivals >= 12
    acc = calibrated.subnet_accuracy[calibrated.subnet]
    served = calibrated.subnet >= 0
    assert acc[after & served].mean() < acc[~after & served].mean()


def test_live_server_checks_a_wrong_profile_and_reports_the_estimate(tmp_path):
    """A real server given a profile that claims the host is 2.5x as fast: the start-up check
    warns (log, /metrics, metadata) and the policy plans on the measured speed."""
    from superserve.serving import ServerProcess
    from superserve.bundle_layout import EMBEDDED_DIR

    wrong = LatencyProfile.load(EMBEDDED_DIR / "profile.json").scaled(0.4)
    path = tmp_path / "profile.json"
    wrong.save(path)
    with ServerProcess(profile=str(path), subnets=[s.id for s in wrong.subnets[::16]], http_port=0,
                       grpc_port=None, warmup_runs=1, calibration_check_s=1.0) as srv:
        meta = json.loads(urllib.request.urlopen(f"{srv.http_url}/v2/models/supernet").read())["parameters"]
        metrics = urllib.request.urlopen(f"{srv.http_url}/metrics").read().decode()
        log = srv.log_path.read_text()
        checks = [e for e in srv.events() if e["event"] == "profile_check"]
    assert meta["profile_check_speed_factor"] > 1.2 and meta["latency_speed_factor"] > 1.2
    assert "slower than the profile says" in meta["profile_check"]
    assert "superserve_profile_check_warning 1.0" in metrics
    gauge = [ln for ln in metrics.splitlines() if ln.startswith("superserve_latency_speed_factor ")]
    assert gauge and float(gauge[0].split()[1]) > 1.2
    assert "WARNING" in log and "profile check" in log
    assert checks and checks[0]["warned"] and checks[0]["speed"] > 1.2


def test_many_subnets_and_long_runs_keep_every_residual_usable():
    """More batches than the per-bucket memory before the first refresh (a long start-up
    check over many SubNets): the refresh must still use every remembered batch."""
    cal = LatencyCalibrator(PROFILE, CalibrationConfig(subnet_samples=4))
    for i in range(2000):
        s, b = i % len(PROFILE.subnets), 1 + i % PROFILE.max_batch
        cal.observe(s, b, PROFILE.subnets[s].latency_p50_ms[b - 1] * 1.1, None, i * 0.001)
    assert cal.refresh(2.0).speed == pytest.approx(1.1, rel=1e-6)
    for i in range(2000, 2100):
        cal.observe(0, 1, PROFILE.subnets[0].latency_p50_ms[0] * 1.1, None, i * 0.001)
    assert cal.refresh(2.1).speed == pytest.approx(1.1, rel=1e-6)


def test_batch_corrections_are_smooth_across_bucket_edges():
    """Per-bucket corrections are held at the buckets' centres and interpolated between them:
    the first size of a dearer bucket must not look less efficient than the last size of the
    cheaper one (the planner runs the batch of highest throughput, so a step would shrink
    its batches: sizes 5, 9 and 13 all but vanished in a live run before)."""
    from superserve.scheduling.calibration import LatencyEstimate

    est = LatencyEstimate(1.0, (1.0,), 0.0, 0.0, 100, 0.0, batch_corrections=(0.9, 1.0, 1.1, 1.2), max_batch=16)
    f = [est.factor(0, b) for b in range(1, 17)]
    assert f[0] == pytest.approx(0.9) and f[-1] == pytest.approx(1.2)
    assert all(b >= a for a, b in zip(f, f[1:]))
    assert max(b / a for a, b in zip(f, f[1:])) < 1.04  # a step would be 1.1 / 1.0 at the edge
    single = LatencyEstimate(1.0, (1.0,), 0.0, 0.0, 100, 0.0, batch_corrections=(1.3,), max_batch=16)
    assert {round(single.factor(0, b), 9) for b in range(1, 17)} == {1.3}


def test_replayed_beliefs_reproduce_the_run_that_logged_them():
    """The twin of a live run replays the router's own policy rebuilds: fed the plans a
    calibrating planner logged (as the router does, at its start-up check and at every
    rebuild), a ReplayedPlanner on the same trace and host makes every decision the same."""
    import numpy as np

    from superserve.scheduling.calibration import ReplayedPlanner

    class Logging(CalibratedPlanner):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.log = []

        def refresh(self, now, *, force=False):
            rebuilt = super().refresh(now, force=force)
            if rebuilt:
                self.log.append((now, self.built.plan_dict()))
            return rebuilt

    big = PROFILE.largest.latency_p50_ms[-1]
    cap = PROFILE.max_batch / (big / 1000)
    tr = bursty(cap / 2, cap / 2, 8, 10, seed=3)
    drift = lambda t: 1.0 if t < 4 else 1.4  # noqa: E731
    kw = dict(num_workers=2, slo_ms=2 * big, latency="lognormal", overhead_ms=0.3, host_speed=drift,
              queue_capacity=1024)
    base = _planner(PROFILE)
    logging = Logging(PROFILE, base.factory, base.config, base_overhead_ms=0.3)
    live = simulate(tr, PROFILE, logging, **kw)
    assert len(logging.log) >= 3
    replay = simulate(tr, PROFILE, ReplayedPlanner(_planner(PROFILE), logging.log), **kw)
    assert np.array_equal(live.outcome, replay.outcome) and np.array_equal(live.subnet, replay.subnet)
    assert np.allclose(live.finish, replay.finish, equal_nan=True)
    # Replaying other beliefs (a planner that thought the host twice as slow) changes decisions.
    slow = [(t, {**plan, "plan_speed": 2 * plan["plan_speed"]}) for t, plan in logging.log]
    other = simulate(tr, PROFILE, ReplayedPlanner(_planner(PROFILE), slow), **kw)
    assert not np.array_equal(live.subnet, other.subnet)
    with pytest.raises(ValueError):
        ReplayedPlanner(_planner(PROFILE), [])
