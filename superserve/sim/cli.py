"""`superserve simulate`: run a policy over a workload on simulated workers.

Mount with ``app.command("simulate")(simulate_command)`` in superserve/cli.py, or run
``python -m superserve.sim.cli --help`` (``simulate_main(argv)``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from superserve.scheduling import Policy, PolicyKind, make_policy
from superserve.scheduling.conventions import default_slo_ms, resolve_profile
from superserve.scheduling.profile import LatencyProfile
from superserve.sim.simulator import LATE_MODES, LATENCY_MODELS, simulate
from superserve.workload import Trace, azure_functions, bursty, gamma, poisson, time_varying, timestamped

WORKLOADS = ("poisson", "gamma", "bursty", "timevarying", "azure-functions", "timestamped", "file")


def build_trace(workload: str, *, rate: float, duration: float, cv2: float, base_rate: float,
                rate_end: float, tau: float, trace: Optional[Path], seed: int) -> Trace:
    """A trace from the command-line description (see `superserve simulate --help`)."""
    if workload == "poisson":
        return poisson(rate, duration, seed)
    if workload == "gamma":
        return gamma(rate, cv2, duration, seed)
    if workload == "bursty":
        return bursty(base_rate, rate, cv2, duration, seed)
    if workload == "timevarying":
        return time_varying(rate, rate_end, tau, cv2, seed=seed)
    if trace is None:
        raise typer.BadParameter(f"--workload {workload} needs --trace PATH")
    if workload == "azure-functions":
        return azure_functions(trace, duration, rate, cv2=cv2 if cv2 > 0 else 1.0, trim_idle=True, seed=seed)
    if workload == "timestamped":
        return timestamped(trace, mean_rate=rate, max_duration_s=duration)
    if workload == "file":
        return Trace.load(trace)
    raise typer.BadParameter(f"unknown workload {workload!r}; choose one of {', '.join(WORKLOADS)}")


def policy_params(kind: PolicyKind, profile: LatencyProfile, *, overhead_ms: float, subnet: Optional[str],
                  buckets: Optional[int], min_accuracy: Optional[float]) -> dict[str, object]:
    """The keyword arguments of ``kind`` that the command's options set."""
    params: dict[str, object] = {"overhead_ms": overhead_ms}
    if kind in (PolicyKind.SLACKFIT, PolicyKind.SLACKFIT_PAPER) and buckets is not None:
        params["num_buckets"] = buckets
    if kind.needs_subnet:
        params["subnet_id"] = subnet or profile.subnets[len(profile) // 2].id
    if kind is PolicyKind.INFAAS and min_accuracy is not None:
        params["min_accuracy"] = min_accuracy
    return params


def host_speed_fn(host_speed: float, after: Optional[str]) -> float | Callable[[float], float]:
    """A constant host speed, or one that drifts to FACTOR from T_S on (``after`` = "T_S:FACTOR")."""
    if not after:
        return host_speed
    t_s, _, f = after.partition(":")
    t_drift, f_drift = float(t_s), float(f)
    return lambda t: host_speed if t < t_drift else f_drift


def parse_failures(specs: list[str]) -> list[tuple[float, int]]:
    """(time_s, worker) pairs from "TIME_S:WORKER" strings (worker 0 when omitted)."""
    out = []
    for f in specs:
        t, _, w = f.partition(":")
        out.append((float(t), int(w or 0)))
    return out


def _choice(value: str, allowed: tuple[str, ...]) -> Any:
    if value not in allowed:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}")
    return value


def simulate_command(
    policy: str = typer.Option("slackfit", help="slackfit, slackfit-paper, maxbatch, maxacc, clipper+, infaas"),
    profile: Optional[Path] = typer.Option(None, help="latency profile JSON (default: embedded, else synthetic)"),
    workload: str = typer.Option("bursty", help=", ".join(WORKLOADS)),
    rate: float = typer.Option(2000.0, help="mean rate (bursty: the Gamma stream's rate; timevarying: start rate), req/s"),
    base_rate: float = typer.Option(1000.0, help="bursty: the constant base stream's rate"),
    rate_end: float = typer.Option(4000.0, help="timevarying: final rate"),
    tau: float = typer.Option(500.0, help="timevarying: acceleration, req/s^2"),
    cv2: float = typer.Option(4.0, help="inter-arrival CV^2 of the Gamma stream"),
    duration: float = typer.Option(10.0, help="seconds of trace"),
    trace: Optional[Path] = typer.Option(None, help="trace file for azure-functions / timestamped / file"),
    workers: int = typer.Option(4, help="simulated workers"),
    slo_ms: Optional[float] = typer.Option(None, help="latency SLO (default: 2 x p50 of the largest SubNet at max batch)"),
    subnet: Optional[str] = typer.Option(None, help="clipper+: the fixed SubNet id"),
    buckets: Optional[int] = typer.Option(None, help="slackfit-paper (and a SlackFit that takes it): number of "
                                                    "latency buckets (default: the policy's)"),
    min_accuracy: Optional[float] = typer.Option(None, help="infaas: accuracy floor"),
    latency: str = typer.Option("p50", help="p50, p99, uniform (p50..p99) or lognormal"),
    overhead_ms: float = typer.Option(0.0, help="fixed cost per batch (the policy is told about it)"),
    late: str = typer.Option("shed", help="shed hopeless requests at once, or serve them late"),
    fail: list[str] = typer.Option([], help="worker failure TIME_S:WORKER (repeatable)"),
    host_speed: float = typer.Option(1.0, help="the simulated host runs batches this many times the profile's "
                                               "latency (1.18: a host slower than profiled)"),
    host_speed_after: Optional[str] = typer.Option(None, help="a host that drifts: T_S:FACTOR, from T_S on "
                                                              "batches take FACTOR x the profile"),
    calibrate: bool = typer.Option(False, help="plan on the measured host, as the live server does: start-up "
                                               "check + online calibration (superserve/scheduling/calibration.py)"),
    queue_capacity: Optional[int] = typer.Option(None, help="queue bound (the server's default: 1024); none: "
                                                            "unbounded"),
    seed: int = typer.Option(0),
    out: Optional[Path] = typer.Option(None, help="write the summary and time series as JSON"),
    records: Optional[Path] = typer.Option(None, help="write per-request records (.npz)"),
    save_trace: Optional[Path] = typer.Option(None, help="save the generated trace (.npz)"),
) -> None:
    """Simulate a scheduling policy on a workload with profiled latencies."""
    prof, which = resolve_profile(profile)
    typer.echo(which)
    tr = build_trace(workload, rate=rate, duration=duration, cv2=cv2, base_rate=base_rate,
                     rate_end=rate_end, tau=tau, trace=trace, seed=seed)
    if save_trace:
        typer.echo(f"trace saved to {tr.save(save_trace)}")
    try:
        kind = PolicyKind.parse(policy)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    params = policy_params(kind, prof, overhead_ms=overhead_ms, subnet=subnet, buckets=buckets,
                           min_accuracy=min_accuracy)
    pol = make_policy(kind, prof, **params)
    planner = None
    if calibrate:
        from superserve.scheduling.calibration import CalibratedPlanner

        def factory(p: LatencyProfile, over: float) -> Policy:
            return make_policy(kind, p, **{**params, "overhead_ms": max(overhead_ms, over)})
        planner = CalibratedPlanner(prof, factory, base_overhead_ms=overhead_ms)
    slo = slo_ms if slo_ms is not None else default_slo_ms(prof)
    res = simulate(tr, prof, planner or pol, num_workers=workers, slo_ms=slo, latency=_choice(latency, LATENCY_MODELS),
                   overhead_ms=overhead_ms, failures=parse_failures(fail), late=_choice(late, LATE_MODES), seed=seed,
                   host_speed=host_speed_fn(host_speed, host_speed_after), queue_capacity=queue_capacity)
    summary = {"trace": tr.summary(), **res.summary(), "slo_ms": slo}
    for k in ("requests", "slo_attainment", "mean_accuracy", "in_time", "late", "shed", "goodput_rps",
              "mean_batch_size", "sim_requests_per_s"):
        typer.echo(f"{k:>20}: {summary[k]}")
    typer.echo(f"{'policy':>20}: {pol!r}   slo_ms: {slo}   workers: {workers}")
    if planner is not None:
        typer.echo(f"{'calibration':>20}: {res.params['calibration']}")
    if out:
        out.write_text(json.dumps({"summary": summary, "time_series": res.time_series(max(0.1, tr.duration_s / 100))},
                                  indent=1, default=float))
        typer.echo(f"summary written to {out}")
    if records:
        res.save_records(str(records))
        typer.echo(f"records written to {records}")


def simulate_main(argv: list[str] | None = None) -> None:
    """Run the command standalone (``python -m superserve.sim.cli ...``)."""
    app = typer.Typer(add_completion=False)
    app.command()(simulate_command)
    app(args=argv, prog_name="superserve simulate")


if __name__ == "__main__":
    simulate_main()
