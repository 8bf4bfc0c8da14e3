"""`superserve demo` (what `make demo` runs): one bursty trace, four policies, live.

For each of SlackFit, Clipper+ (low accuracy), Clipper+ (most accurate) and INFaaS: start a
real server (embedded bundle), replay the trace with the open-loop client, stop it. Prints
the comparison table, writes ``demo.json`` and ``demo.png`` (accuracy on x, SLO attainment
on y) under the output directory. Rules: superserve/experiments/comparison.py.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer


def demo_command(
    bundle: Optional[Path] = typer.Option(None, help="SuperNet bundle (default: the embedded one)"),
    workers: int = typer.Option(1, help="server worker processes (2 cores here: 1 leaves a core for router + client)"),
    duration: float = typer.Option(45.0, help="seconds of trace per policy"),
    max_mean_rate: float = typer.Option(1500.0, help="cap on the trace's mean rate (router + client budget)"),
    out_dir: Path = typer.Option(Path("runs/demo"), help="where demo.json and demo.png go"),
    seed: int = typer.Option(0),
    quiet: bool = typer.Option(False, help="no progress bars"),
) -> None:
    """Start the server, replay a bursty trace under SlackFit, two Clipper+ versions and INFaaS; compare."""
    from superserve.experiments import comparison as ex
    from superserve.loadgen.report import clean_nans

    t0 = time.monotonic()
    p = ex.plan(bundle, workers=workers, duration_s=duration, max_mean_rate=max_mean_rate, seed=seed, echo=typer.echo)
    for k, v in p.rules.items():
        typer.echo(f"{k:>9}: {v}")
    typer.echo(f"    trace: {len(p.trace)} requests, mean {p.trace.mean_rate:.0f} req/s, "
               f"peak {p.trace.summary()['peak_rate']:.0f} req/s (100 ms bins), SLO {p.slo_ms} ms")
    rows, series, checks = [], {}, {}
    for spec in p.policies:
        s, ts = ex.run_policy(p, spec, progress=not quiet)
        sim = ex.live_twin(p, spec, s)
        rows.append(ex.row(spec, s, sim))
        series[spec.label] = ts
        check = next((e for e in s["calibration_events"] if e["event"] == "profile_check"), None)
        if check is not None:
            checks[spec.label] = check.get("text", "")
            typer.echo(f"{spec.label} server: {check.get('text', '')}")
        acc = s["mean_accuracy"]
        speeds = [e["speed"] for e in s["calibration_events"]]
        typer.echo(f"{spec.label}: attainment {s['slo_attainment']:.4f}, accuracy "
                   + ("-" if acc is None else f"{100 * acc:.2f} %")
                   + (f"; live host speed factor p50 {sorted(speeds)[len(speeds) // 2]:.3f} "
                      f"(range {min(speeds):.3f}-{max(speeds):.3f})" if speeds else ""))
    verdict = ex.acceptance(rows)
    title = (f"superserve demo: {p.trace.name}, {p.workers} worker(s), SLO {p.slo_ms} ms, "
             f"{p.profile.device}")
    ex.print_table(rows, title)
    typer.echo(f"SlackFit live SLO attainment {verdict['attainment']:.4f}: "
               f"{'meets' if verdict['attainment_met'] else 'does NOT meet'} the {verdict['min_attainment']:g} target")
    typer.echo(f"SlackFit {'has' if verdict['comparison_met'] else 'does NOT have'} the best SLO attainment among rows of "
               f"equal or higher accuracy (rivals: {', '.join(verdict['rivals']) or 'none'}"
               + (f"; beaten by {', '.join(verdict['beaten_by'])}" if verdict["beaten_by"] else "") + ")")
    typer.echo(f"acceptance: {'PASSED' if verdict['passed'] else 'NOT passed'} ({verdict['rule']})")
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"bundle": str(p.bundle), "device": p.profile.device, "workers": p.workers, "slo_ms": p.slo_ms,
           "rules": p.rules, "capacity": p.capacity, "trace": {"name": p.trace.name, **p.trace.summary(),
                                                               "meta": p.trace.meta},
           "rows": rows, "acceptance": verdict, "profile_checks": checks, "time_series": series,
           "wall_s": round(time.monotonic() - t0, 1)}
    (out_dir / "demo.json").write_text(json.dumps(clean_nans(doc), indent=1))
    ex.plot_comparison(out_dir / "demo.png", rows, series, title)
    typer.echo(f"wrote {out_dir / 'demo.json'} and {out_dir / 'demo.png'} ({doc['wall_s']} s)")
