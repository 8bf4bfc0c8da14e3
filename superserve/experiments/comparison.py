"""A live policy comparison: the same bursty trace replayed against one real server per
policy, with the simulator's prediction for each. Shared by `superserve demo` and
benchmarks/live.py so both state (and use) the same rules.

Rules (all measured or derived on the machine that runs it):
* SLO: the experiments' rule (superserve.scheduling.conventions.default_slo_ms): 2 x p50 of the most
  accurate SubNet at the largest batch, from the bundle's profile.
* Capacity: C_large = workers x B / t(largest SubNet, batch B), with t measured now by
  running that SubNet at max batch B in the worker configuration (experiments.raw_rate), not
  taken from the profile (profiles age; the machine may be shared). By default
  (``capacity="served"``) C_large is then the throughput a live server running that SubNet
  alone (Clipper+) actually reaches under a saturating Poisson load (1.5 x the raw figure, a
  few seconds): a worker looping alone runs faster than it ever does while serving, with the
  router, the client and other tenants on the same cores, so a trace sized to the loop
  overloads the most accurate SubNet instead of putting the mean at its capacity (figures:
  docs/loadgen.md).
  ``capacity="raw"``: the loop's figure (recorded either way as ``c_large_raw``).
* Trace: the paper's bursty shape: a constant-rate base stream of ``base_frac`` x C_large
  plus a Gamma stream (CV^2 = ``cv2``) of ``variant_frac`` x C_large. The defaults (0.5 and
  0.5) put the *mean* at the most accurate SubNet's capacity, so it cannot keep up through
  bursts, while the fastest SubNet can: the regime where choosing per batch matters. The
  mean is capped at ``max_mean_rate`` (what one router and a Python client sustain; see
  docs/loadgen.md) and the cap is reported when it binds.
* Policies: SlackFit, Clipper+ with a low-accuracy and with the most accurate SubNet, and
  INFaaS (no accuracy floor: always the cheapest SubNet).
* ``profile_speed_factor`` (default 1): the servers are given the bundle's profile scaled by
  it (0.85: a profile that claims the host is ~18 % faster than it is), to show that online
  calibration absorbs a wrong profile. The SLO and the trace stay those of the bundle.
* The simulated twin (:func:`simulate_policy`, :func:`live_twin`) runs the server's own
  policy factory on the served profile, replaying the router's logged policy rebuilds (its
  beliefs; ``replay_beliefs=False``: the planner calibrates on the simulated host instead);
  its host runs at the speed the live server measured over the run
  (the server's calibration events, a function of time) with the per-batch-size shape the
  live run measured (:func:`host_shape`: this host's batch 1 may run 0.7 x the profile and
  its batch 12 0.88 x; a uniform factor would overstate a saturated SubNet's throughput by
  a few per cent), or, for ``sim_nominal_*``, at ``1 / profile_speed_factor`` throughout.
"""
from __future__ import annotations

import time
import bisect
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from superserve.bundle_layout import EMBEDDED_DIR, PROFILE, REQUIRED, SUBSET, BundleLayout
from superserve.experiments.raw_rate import measure_raw_rate
from superserve.loadgen.cli import run_bench
from superserve.loadgen.report import default_bin_s, summarize, time_series
from superserve.scheduling.conventions import default_slo_ms, spanning_subnets
from superserve.scheduling.profile import LatencyProfile
from superserve.serving.config import ServeConfig
from superserve.workload import Trace, bursty

Echo = Callable[[str], None]


@dataclass(frozen=True)
class PolicySpec:
    label: str
    policy: str
    subnet: str | None = None


@dataclass
class ExperimentPlan:
    bundle: Path
    profile: LatencyProfile
    workers: int
    threads_per_worker: int
    slo_ms: float
    trace: Trace
    policies: list[PolicySpec]
    capacity: dict[str, Any] = field(default_factory=dict)
    rules: dict[str, str] = field(default_factory=dict)
    profile_speed_factor: float = 1.0  # the served profile = the bundle's x this
    served_profile: Path | None = None  # the file the servers load (None: the bundle's)


def smallest_subnet(profile: LatencyProfile):
    """The smallest SubNet: fewest FLOPs when the profile records them, else the fastest at
    the largest batch (batch-1 latencies are too noisy to rank small SubNets)."""
    if all(s.flops > 0 for s in profile.subnets):
        return min(profile.subnets, key=lambda s: s.flops)
    return min(profile.subnets, key=lambda s: s.latency_p50_ms[-1])


def lineup(profile: LatencyProfile) -> list[PolicySpec]:
    """SlackFit, Clipper+ (low accuracy), Clipper+ (most accurate), INFaaS."""
    span = spanning_subnets(profile, 6)
    low = span[1] if len(span) > 2 else span[0]
    high = profile.largest.id
    return [PolicySpec("SlackFit", "slackfit"),
            PolicySpec("Clipper+ low", "clipper+", low),
            PolicySpec("Clipper+ high", "clipper+", high),
            PolicySpec("INFaaS", "infaas")]


def plan(bundle: Path | None = None, *, workers: int = 1, threads_per_worker: int = 1, duration_s: float = 45.0,
         base_frac: float = 0.5, variant_frac: float = 0.5, cv2: float = 8.0, max_mean_rate: float = 1500.0,
         seed: int = 0, measure_s: float = 1.5, echo: Echo = print,
         profile_speed_factor: float = 1.0, capacity: str = "served", probe_s: float = 4.0) -> ExperimentPlan:
    layout = BundleLayout(bundle if bundle is not None else EMBEDDED_DIR).require(REQUIRED + (SUBSET,))
    bundle = layout.root
    profile = LatencyProfile.load(layout.profile)
    slo = default_slo_ms(profile)
    largest = profile.largest
    echo(f"measuring capacity: {largest.id} at batch {profile.max_batch} on {workers} worker(s) x "
         f"{threads_per_worker} thread(s) for {measure_s:g} s")
    raw = measure_raw_rate(str(bundle), largest.id, workers=workers, threads=threads_per_worker,
                           batch=profile.max_batch, seconds=measure_s)
    c_raw = raw.images_per_s
    c_large, probe = c_raw, None
    if capacity == "served":
        probe = served_capacity(bundle, largest.id, workers, threads_per_worker, slo, 1.5 * c_raw, probe_s)
        c_large = probe["throughput_rps"]
        echo(f"served capacity of {largest.id} alone: {c_large:.0f} req/s ({probe['note']})")
    elif capacity != "raw":
        raise ValueError(f"capacity must be 'served' or 'raw', not {capacity!r}")
    base, variant = base_frac * c_large, variant_frac * c_large
    capped = base + variant > max_mean_rate
    if capped:
        k = max_mean_rate / (base + variant)
        base, variant = base * k, variant * k
    trace = bursty(base, variant, cv2, duration_s, seed)
    rules = {
        "slo": f"2 x p50({largest.id}, batch {profile.max_batch}) = 2 x {largest.latency_p50_ms[-1]:.3f} ms "
               f"-> {slo} ms (superserve.scheduling.conventions.default_slo_ms)",
        "capacity": (f"C_large = {c_large:.0f} req/s: what a live server running {largest.id} alone (Clipper+, "
                     f"{workers} worker(s)) answered per second under a saturating Poisson load of "
                     f"{1.5 * c_raw:.0f} req/s for {probe_s:g} s (its raw loop: {workers} x {profile.max_batch} / "
                     f"{raw.batch_ms_p50:.3f} ms = {c_raw:.0f} img/s)") if probe else
                    (f"C_large = {c_large:.0f} img/s = {workers} worker(s) x {profile.max_batch} / "
                     f"{raw.batch_ms_p50:.3f} ms measured now ({largest.id}, batch {profile.max_batch})"),
        "trace": f"bursty: base {base_frac:g} x C_large + Gamma(CV^2={cv2:g}) {variant_frac:g} x C_large, "
                 f"{duration_s:g} s, seed {seed}" + (f"; mean capped at {max_mean_rate:g} req/s" if capped else ""),
    }
    served = None
    if profile_speed_factor != 1.0:
        served = Path(tempfile.mkdtemp(prefix="superserve-profile-")) / PROFILE
        profile.scaled(profile_speed_factor).save(served)
        rules["profile"] = (f"servers load the bundle's profile x {profile_speed_factor:g} (it claims the host "
                            f"{100 * (1 / profile_speed_factor - 1):.0f} % faster than profiled); SLO and trace unchanged")
    return ExperimentPlan(bundle, profile, workers, threads_per_worker, slo, trace, lineup(profile),
                          {"c_large_measured": round(c_large, 1), "batch_ms_p50": round(raw.batch_ms_p50, 4),
                           "rule": capacity, "c_large_raw": round(c_raw, 1), "served_probe": probe,
                           "profile_c_large": round(workers * profile.max_batch / (largest.latency_p50_ms[-1] / 1000), 1),
                           "capped": capped, "base_rate": round(base, 1), "variant_rate": round(variant, 1)},
                          rules, profile_speed_factor, served)


def served_capacity(bundle: Path, subnet: str, workers: int, threads: int, slo_ms: float, rate: float,
                    seconds: float) -> dict[str, Any]:
    """Requests per second a live server running ``subnet`` alone answers (in time or late)
    under a Poisson load of ``rate`` (above what it can do): its serving throughput."""
    from superserve.serving.process import ServerProcess
    from superserve.workload import poisson

    cfg = ServeConfig(bundle=str(bundle), policy="clipper+", subnet=subnet, workers=workers,
                      threads_per_worker=threads, slo_ms=slo_ms, grpc_port=None, http_port=0).validate()
    with ServerProcess(cfg) as srv:
        run = run_bench(poisson(rate, seconds, seed=97), url=srv.http_url, model=cfg.model_name, slo_ms=slo_ms,
                        bundle=bundle, progress=False, auth_token=srv.config.auth_token)
    s = summarize(run.records, wall_s=run.wall_s)
    return {"throughput_rps": float(s["throughput_rps"]), "offered_rps": round(rate, 1), "seconds": seconds,
            "attainment": s["slo_attainment"], "mean_batch_size": s["mean_batch_size"],
            "note": f"offered {rate:.0f} req/s for {seconds:g} s, mean batch {s['mean_batch_size']}"}


def server_config(p: ExperimentPlan, spec: PolicySpec) -> ServeConfig:
    return ServeConfig(bundle=str(p.bundle), policy=spec.policy, subnet=spec.subnet, workers=p.workers,
                       threads_per_worker=p.threads_per_worker, slo_ms=p.slo_ms, grpc_port=None,
                       http_port=0, profile=str(p.served_profile) if p.served_profile else None).validate()


def host_timeline(events: list[dict[str, Any]], t0: float
                  ) -> tuple[Callable[[float], float], Callable[[float], float], Callable[[float], float]]:
    """(speed(t), overhead_ms(t), lag_margin_ms(t)) of a live run from its server's calibration
    events (the mean measured / profiled batch time, and the mean per-batch overhead plus
    the router's mean turnaround over each window), with t
    in seconds from the trace start ``t0`` (monotonic): piecewise constant, each estimate
    held from when it was made; before the first, the start-up check's."""
    pts = [e for e in events if e["event"] in ("profile_check", "calibration")]
    if not pts:
        return (lambda t: 1.0), (lambda t: 0.0), (lambda t: 0.0)
    ts = [e["t"] - t0 for e in pts]
    # Throughput follows means, not medians: replay the mean ratio and the mean overhead of the
    # batches finished since the previous point (0.25 s: bursts slow the workers down exactly
    # when capacity matters, which a window's average would smooth away); older servers
    # reported only window means.
    sp = [float(e.get("speed_now", e.get("mean_speed", e["speed"]))) for e in pts]
    # The worker is also idle from each result until its next batch leaves (answering,
    # planning, dispatching: ~0.1 ms a batch, 1-2 % of a saturated worker's time).
    ov = [float(e.get("overhead_now_ms", e.get("overhead_mean_ms", e["overhead_p50_ms"])))
          + float(e.get("turnaround_now_ms", 0.0)) for e in pts]
    lag = [float(e.get("lag_margin_ms", 0.0)) for e in pts]

    def at(vals: list[float]) -> Callable[[float], float]:
        # A point describes the batches finished since the previous one: it holds over
        # (t_prev, t]; after the last point, the last value.
        def f(t: float) -> float:
            return vals[min(len(vals) - 1, bisect.bisect_left(ts, t))]
        return f
    return at(sp), at(ov), at(lag)


def host_shape(records: Any, profile: LatencyProfile, prior_batches: float = 8.0) -> list[float]:
    """This host's latency per batch size relative to its mean speed, from a live run's
    records (compute_ms, batch_size and SubNet of every answered request): for each batch
    size b, sum(measured) / sum(profiled p50) over its batches, divided by the same ratio
    over all batches; shrunk towards 1 by ``prior_batches`` (a size seen in a handful of
    batches says little). Index b-1 holds size b."""
    nb = profile.max_batch
    b = np.asarray(records.batch_size)
    c = np.asarray(records.compute_ms, dtype=np.float64)
    sub = np.asarray(records.subnet)
    ok = (b > 0) & (b <= nb) & np.isfinite(c) & (sub >= 0)
    if not ok.any():
        return [1.0] * nb
    ids = list(records.subnet_ids)
    p50 = np.array([[sp.latency_p50_ms[k] for k in range(nb)] for sp in (profile.by_id(i) for i in ids)])
    b, c, sub = b[ok].astype(int), c[ok], sub[ok]
    prof = p50[sub, b - 1]
    w = 1.0 / b  # each request carries 1/b of its batch
    overall = float((c * w).sum() / (prof * w).sum())
    batches = np.bincount(b - 1, weights=w, minlength=nb)
    meas = np.bincount(b - 1, weights=c * w, minlength=nb)
    pred = np.bincount(b - 1, weights=prof * w, minlength=nb)
    ratio = np.divide(meas, pred * overall, out=np.ones(nb), where=pred > 0)
    shrunk = (batches * ratio + prior_batches) / (batches + prior_batches)
    return [round(float(x), 4) for x in shrunk]


def plan_points(events: list[dict[str, Any]], t0: float) -> list[tuple[float, dict]]:
    """(t from the trace start, plan) of every policy the live router built (its start-up
    check's and each rebuild's), for :class:`~superserve.scheduling.calibration.ReplayedPlanner`."""
    return [(e["t"] - t0, e["plan"]) for e in events if "plan" in e]


def live_twin(p: ExperimentPlan, spec: PolicySpec, s: dict[str, Any], *, replay_beliefs: bool = True,
              prefix: str = "sim") -> dict[str, Any]:
    """The simulated twin of a live run (``s`` from :func:`run_policy`): the host replayed at
    the speed, overhead and loop-lag margin the server measured over time, with the
    per-batch-size shape of its records, and (``replay_beliefs``) the router's own policy
    rebuilds replayed instead of re-learnt from the simulated host."""
    speed_fn, over_fn, lag_fn = host_timeline(s["calibration_events"], s["trace_t0"])
    plans = plan_points(s["calibration_events"], s["trace_t0"]) if replay_beliefs else None
    return simulate_policy(p, spec, host_speed=speed_fn, host_overhead_ms=over_fn, lag_margin_ms=lag_fn,
                           host_shape=s.get("host_shape"), plans=plans or None, prefix=prefix)


def simulate_policy(p: ExperimentPlan, spec: PolicySpec, trace: Trace | None = None,
                    speed_factor: float = 1.0, prefix: str = "sim",
                    host_speed: float | Callable[[float], float] | None = None,
                    host_overhead_ms: float | Callable[[float], float] | None = None,
                    lag_margin_ms: Callable[[float], float] | None = None,
                    host_shape: list[float] | None = None,
                    plans: list[tuple[float, dict]] | None = None) -> dict[str, Any]:
    """The simulator's prediction with the very objects the server builds from the same
    config (the calibrated planner and its policy factory: same planning quantile,
    overhead, response margin, start-up check and queue bound), on the same trace and
    worker count.
    ``latency="lognormal"`` draws batch latencies through the profile's p50 and p99; the
    ``{prefix}_p50_*`` figures use deterministic p50 latencies. The simulated host runs
    ``host_speed`` x the served profile (default ``1 / profile_speed_factor``: the bundle's
    profile; a function of time replays a measured host), times ``host_shape[b - 1]`` per
    batch size when given. ``plans`` (from :func:`plan_points`): the planner replays these
    policy rebuilds instead of calibrating on the simulated host. ``speed_factor`` != 1 scales the
    served profile itself (a diagnostic), policy included."""
    from superserve.serving.model_info import read_model_info
    from superserve.scheduling.calibration import ReplayedPlanner
    from superserve.serving.server import build_planner
    from superserve.sim import simulate

    cfg = server_config(p, spec)
    info = read_model_info(cfg)
    if speed_factor != 1.0:
        info = replace(info, profile=info.profile.scaled(speed_factor))
    trace = trace if trace is not None else p.trace
    # The simulator models the router's clock, on which the server plans every request to
    # finish response_margin_ms early (the path outside it); simulate that budget.
    budget_ms = p.slo_ms - min(cfg.response_margin_ms, 0.25 * p.slo_ms)
    budget: float | np.ndarray = budget_ms
    if lag_margin_ms is not None:  # the live router's margin grew with its loop lag: replay it
        budget = np.array([p.slo_ms - min(cfg.response_margin_ms + lag_margin_ms(t), 0.25 * p.slo_ms)
                           for t in trace.arrivals])
    host = host_speed if host_speed is not None else 1.0 / p.profile_speed_factor
    over = host_overhead_ms if host_overhead_ms is not None else cfg.overhead_ms
    out: dict[str, Any] = {f"{prefix}_slo_ms": budget_ms}
    for key, model in ((prefix, "lognormal"), (f"{prefix}_p50", "p50")):
        planner = build_planner(cfg, info)
        if plans:
            planner = ReplayedPlanner(planner, plans)
        res = simulate(trace, info.profile, planner, num_workers=p.workers, slo_ms=budget,
                       latency=model, overhead_ms=over, late=cfg.late, seed=0,
                       queue_capacity=cfg.queue_capacity, host_speed=host, host_shape=host_shape)
        out[f"{key}_slo_attainment"] = round(res.slo_attainment, 6)
        out[f"{key}_mean_accuracy"] = round(res.mean_accuracy, 5) if res.mean_accuracy == res.mean_accuracy else None
        if model == "lognormal":
            out[f"{prefix}_calibration"] = res.params.get("calibration")
    return out


def run_policy(p: ExperimentPlan, spec: PolicySpec, *, trace: Trace | None = None, progress: bool = True,
               processes: int = 1) -> tuple[dict[str, Any], dict[str, list]]:
    """Start a server for ``spec``, replay the trace, stop it; (summary, time series)."""
    from superserve.serving.process import ServerProcess

    trace = trace if trace is not None else p.trace
    t0 = time.monotonic()
    with ServerProcess(server_config(p, spec)) as srv:
        started = time.monotonic() - t0
        run = run_bench(trace, url=srv.http_url, model=srv.config.model_name, slo_ms=p.slo_ms, bundle=p.bundle,
                        progress=progress, label=spec.label, processes=processes, auth_token=srv.config.auth_token)
        t_end = time.monotonic()
        events = srv.events()
    s = summarize(run.records, wall_s=run.wall_s)
    s["server_start_s"] = round(started, 2)
    # The trace's start on the monotonic clock: the last answer came back at
    # max(scheduled + latency) from it, just before run_bench returned.
    r = run.records
    done = r.scheduled_s + r.latency_s
    s["trace_t0"] = t_end - float(np.nanmax(done)) if np.isfinite(done).any() else t_end - trace.duration_s
    s["calibration_events"] = [e for e in events if e["event"] in ("profile_check", "calibration")]
    s["host_shape"] = host_shape(r, p.profile)
    check = next((e for e in events if e["event"] == "profile_check"), None)
    if check is not None:
        s["profile_check"] = {k: check[k] for k in ("speed", "overhead_ms", "overhead_p50_ms", "batches", "seconds",
                                                    "warned") if k in check}
    if run.errors:
        s["errors"] = run.errors
    return s, time_series(run.records, default_bin_s(trace.duration_s))


def row(spec: PolicySpec, s: dict[str, Any], sim: dict[str, Any] | None = None) -> dict[str, Any]:
    """One line of the comparison table."""
    r = {"policy": spec.label, "policy_name": spec.policy, "subnet": spec.subnet,
         "slo_attainment": s["slo_attainment"], "mean_accuracy": s["mean_accuracy"],
         "top1_correct": s["top1_correct"], "latency_p99_ms": s["latency_ms"]["p99"],
         "throughput_rps": s["throughput_rps"], "goodput_rps": s["goodput_rps"], "counts": s["counts"],
         "mean_batch_size": s["mean_batch_size"], "send_lag_p99_ms": s["send_lag_ms"]["p99"]}
    if sim:
        r.update(sim)
    return r


def acceptance(rows: list[dict[str, Any]], target: str = "SlackFit", min_attainment: float = 0.99) -> dict[str, Any]:
    """Two conditions, both required: SlackFit's own live SLO attainment is at least
    ``min_attainment`` at the demo's load, and its row has the best SLO attainment among rows
    of equal or higher accuracy (accuracy compared to 0.1 points)."""
    me = next(r for r in rows if r["policy"] == target)
    acc = me["mean_accuracy"] or 0.0
    rivals = [r for r in rows if r is not me and (r["mean_accuracy"] or 0.0) >= acc - 0.001]
    beaten_by = [r["policy"] for r in rivals if r["slo_attainment"] > me["slo_attainment"]]
    own_ok = me["slo_attainment"] >= min_attainment
    return {"rule": f"{target} live SLO attainment >= {min_attainment:g}, and the best SLO attainment among rows "
                    "of equal or higher mean accuracy (within 0.1 points)",
            "attainment": me["slo_attainment"], "min_attainment": min_attainment, "attainment_met": own_ok,
            "rivals": [r["policy"] for r in rivals], "beaten_by": beaten_by, "comparison_met": not beaten_by,
            "passed": own_ok and not beaten_by}


def plot_comparison(path: Path, rows: list[dict[str, Any]], series: dict[str, dict[str, list]], title: str) -> Path:
    """Left: the paper's view (mean served accuracy on x, SLO attainment on y), live markers
    filled and the simulator's prediction hollow. Right: SlackFit's offered rate and served
    accuracy over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [1, 1.3]})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, r in enumerate(rows):
        c = colours[k % len(colours)]
        if r["mean_accuracy"] is not None:
            ax.scatter(100 * r["mean_accuracy"], r["slo_attainment"], s=70, color=c, label=r["policy"], zorder=3)
        if r.get("sim_mean_accuracy") is not None:
            ax.scatter(100 * r["sim_mean_accuracy"], r["sim_slo_attainment"], s=70, facecolors="none",
                       edgecolors=c, zorder=2)
    ax.set_xlabel("mean served accuracy (%)")
    ax.set_ylabel("SLO attainment")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("live (filled) vs simulated (hollow)", fontsize=9)
    sf = series.get("SlackFit")
    if sf:
        t = np.array(sf["t_s"], dtype=float)
        ax2.plot(t, sf["offered_rps"], color="0.5", lw=0.8, label="offered req/s")
        ax2.plot(t, sf["goodput_rps"], color="tab:green", lw=0.8, label="in time req/s (SlackFit)")
        ax2.set_ylabel("requests / s")
        ax2.set_xlabel("time (s)")
        ax3 = ax2.twinx()
        acc = np.array([np.nan if v is None else 100 * v for v in sf["accuracy"]], dtype=float)
        ax3.plot(t, acc, color="tab:blue", lw=1.0, label="SlackFit served accuracy")
        ax3.set_ylabel("served accuracy (%)", color="tab:blue")
        h1, l1 = ax2.get_legend_handles_labels()
        h2, l2 = ax3.get_legend_handles_labels()
        ax2.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper right")
        ax2.set_title("SlackFit over the trace", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for col in ("policy", "SLO attain.", "mean acc. %", "top-1 %", "p99 ms", "req/s", "sim attain.", "sim acc. %"):
        t.add_column(col, justify="left" if col == "policy" else "right")

    def pct(v: Any) -> str:
        return "-" if v is None else f"{100 * v:.2f}"

    for r in rows:
        t.add_row(r["policy"], f"{r['slo_attainment']:.4f}", pct(r["mean_accuracy"]), pct(r["top1_correct"]),
                  "-" if r["latency_p99_ms"] is None else f"{r['latency_p99_ms']:.1f}",
                  "-" if r["throughput_rps"] is None else f"{r['throughput_rps']:.0f}",
                  "-" if r.get("sim_slo_attainment") is None else f"{r['sim_slo_attainment']:.4f}",
                  pct(r.get("sim_mean_accuracy")))
    Console(width=max(110, Console().width)).print(t)
    for r in rows:
        if r["subnet"]:
            print(f"  {r['policy']}: fixed SubNet {r['subnet']}")
