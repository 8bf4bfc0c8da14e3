"""`superserve bench`: replay a workload against a running server, open loop.

Mount with ``app.command("bench")(bench_command)`` (superserve/cli.py does).
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from superserve.bundle_layout import BundleLayout
from superserve.loadgen.kserve import infer_path
from superserve.loadgen.payloads import payloads_from_bundle
from superserve.loadgen.report import default_bin_s, plot_run, summarize, time_series, write_json
from superserve.loadgen.runner import ReplayRun, replay
from superserve.loadgen.sender import SenderConfig
from superserve.loadgen.workload_spec import parse_workload
from superserve.workload import Trace

DEFAULT_MODEL = "supernet"  # superserve.serving.config.ServeConfig.model_name
# Ask only for the predicted class: a one-integer answer is cheaper to encode and parse than
# ten logits, on both sides. (--output "" asks for every output.)
DEFAULT_OUTPUT = "class_index"


def wait_until_ready(base_url: str, timeout_s: float = 5.0) -> None:
    """Raise a clear error unless ``GET /v2/health/ready`` answers 200."""
    try:
        with urllib.request.urlopen(base_url + "/v2/health/ready", timeout=timeout_s) as r:
            if r.status == 200:
                return
            raise typer.BadParameter(f"{base_url} is not ready (status {r.status})")
    except (urllib.error.URLError, OSError) as e:
        raise typer.BadParameter(f"no KServe v2 server answers at {base_url} ({e}); start one with "
                                 "`superserve serve` or pass --url") from e


def rich_progress(description: str) -> tuple[Callable[[int, int, int, int], None], Callable[[], None]]:
    """A progress callback (issued, answered, ok, total) drawing a rich bar, and its closer."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("answered {task.fields[answered]}  ok {task.fields[ok]}"), TimeElapsedColumn(),
                    auto_refresh=False)
    task = prog.add_task(description, total=None, answered=0, ok=0)
    prog.start()

    def update(issued: int, answered: int, ok: int, total: int) -> None:
        prog.update(task, completed=issued, total=total, answered=answered, ok=ok)
        prog.refresh()
    return update, prog.stop


def print_summary(s: dict[str, Any], echo: Callable[[str], None] = typer.echo) -> None:
    lat = s["latency_ms"]
    lag = s["send_lag_ms"]
    acc = s["mean_accuracy"]
    top1 = s["top1_correct"]
    echo(f"requests {s['requests']}  offered {s['offered_rps']} req/s over {s['duration_s']} s  SLO {s['slo_ms']} ms")
    echo(f"SLO attainment {s['slo_attainment']:.4f}   mean served accuracy "
         f"{'-' if acc is None else f'{100 * acc:.2f} %'}   top-1 correct {'-' if top1 is None else f'{100 * top1:.2f} %'}")
    echo(f"latency ms (OK answers): p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  p99.9 {lat['p999']}  max {lat['max']}")
    echo(f"throughput {s['throughput_rps']} req/s  goodput {s['goodput_rps']} req/s  mean batch {s['mean_batch_size']}")
    echo("outcomes: " + "  ".join(f"{k} {v}" for k, v in s["counts"].items() if v))
    echo(f"send lag ms: p50 {lag['p50']}  p99 {lag['p99']}  max {lag['max']}  (>1 ms: {lag['late_1ms']})")


def run_bench(trace: Trace, *, url: str, model: str, slo_ms: float, bundle: Optional[Path], processes: int = 1,
              connections: int = 512, timeout_s: float = 10.0, progress: bool = True, label: str = "replay",
              output: str = DEFAULT_OUTPUT, transport: str = "raw", auth_token: str | None = None,
              margin_ms: float = 0.0) -> ReplayRun:
    """Replay ``trace``; attainment counts against ``slo_ms`` from the scheduled send time, while
    the deadline sent to the server is ``slo_ms - margin_ms``: the server stamps its deadline
    when the request reaches its router, so the time spent before (client, kernel, HTTP
    parsing) and after (answer encoding, transfer) is not in its budget unless reserved here."""
    if not 0 <= margin_ms < slo_ms:
        raise ValueError(f"margin_ms must be in [0, slo_ms), got {margin_ms}")
    payloads = payloads_from_bundle(bundle, slo_ms=slo_ms - margin_ms, outputs=[output] if output else None)
    cfg = SenderConfig(url.rstrip("/"), infer_path(model), timeout_s=timeout_s, connections=connections,
                       transport=transport, headers={"Authorization": f"Bearer {auth_token}"} if auth_token else {})
    update, close = rich_progress(label) if progress else (None, lambda: None)
    try:
        return replay(trace, payloads, cfg, slo_ms=slo_ms, processes=processes, progress=update)
    finally:
        close()


def default_slo(bundle: Optional[Path]) -> float:
    """The experiments' SLO rule (superserve.scheduling.conventions) applied to the bundle's profile."""
    from superserve.scheduling.conventions import default_slo_ms, resolve_profile

    return default_slo_ms(resolve_profile(BundleLayout(bundle).profile if bundle is not None else None)[0])


def bench_command(
    url: str = typer.Option("http://127.0.0.1:8000", help="server base URL (KServe v2 REST)"),
    model: str = typer.Option(DEFAULT_MODEL, help="model name in /v2/models/{model}/infer"),
    trace: Optional[Path] = typer.Option(None, help="trace file (.npz, superserve.workload.Trace)"),
    workload: Optional[str] = typer.Option(None, help="or a workload spec, e.g. bursty:base=400,rate=400,cv2=8,duration=60"),
    slo_ms: Optional[float] = typer.Option(None, help="deadline sent with every request and used for attainment "
                                                      "(default: 2 x p50 of the largest SubNet at max batch)"),
    bundle: Optional[Path] = typer.Option(None, help="bundle whose labelled subset supplies the images (default: embedded)"),
    processes: int = typer.Option(1, help="sender processes (split the trace round-robin)"),
    connections: int = typer.Option(512, help="keep-alive connections per sender process"),
    timeout_s: float = typer.Option(10.0, help="per-request client timeout"),
    margin_ms: float = typer.Option(0.0, help="send slo_ms minus this to the server (reserve for the HTTP path "
                                              "outside the router's clock); attainment still uses --slo-ms"),
    transport: str = typer.Option("raw", help="raw (lean asyncio HTTP/1.1, less client CPU per request; docs/loadgen.md) or aiohttp"),
    output: str = typer.Option(DEFAULT_OUTPUT, help="output to ask for (its argmax / value is the prediction); '' = all"),
    out: Optional[Path] = typer.Option(None, help="write summary + time series JSON here"),
    plot: Optional[Path] = typer.Option(None, help="write a PNG (rate, served accuracy, latency over time)"),
    records: Optional[Path] = typer.Option(None, help="write per-request records (.npz)"),
    quiet: bool = typer.Option(False, help="no progress bar"),
    auth_token: Optional[str] = typer.Option(None, envvar="SUPERSERVE_AUTH_TOKEN", show_default=False,
                                             help="bearer token of a server started with --auth-token"),
) -> None:
    """Replay a workload against a running server at its scheduled send times (open loop)."""
    if (trace is None) == (workload is None):
        raise typer.BadParameter("give exactly one of --trace FILE or --workload SPEC")
    tr = Trace.load(trace) if trace is not None else parse_workload(workload or "")
    slo = slo_ms if slo_ms is not None else default_slo(bundle)
    wait_until_ready(url.rstrip("/"))
    typer.echo(f"replaying {tr.name}: {len(tr)} requests over {tr.duration_s:.1f} s (mean {tr.mean_rate:.0f} req/s) "
               f"-> {url} model {model}, SLO {slo} ms")
    run = run_bench(tr, url=url, model=model, slo_ms=slo, bundle=bundle, processes=processes,
                    connections=connections, timeout_s=timeout_s, progress=not quiet, label=tr.name,
                    output=output, transport=transport, auth_token=auth_token,
                    margin_ms=margin_ms)
    s = summarize(run.records, wall_s=run.wall_s)
    print_summary(s)
    if run.errors:
        typer.echo("errors: " + json.dumps(run.errors)[:600])
    series = time_series(run.records, default_bin_s(tr.duration_s))
    if out:
        write_json(out, s, series, {"url": url, "model": model, "trace": {"name": tr.name, **tr.summary(),
                                                                          "meta": tr.meta},
                                    "processes": processes, "transport": transport, "errors": run.errors})
        typer.echo(f"wrote {out}")
    if plot:
        plot_run(plot, series, s, title=tr.name)
        typer.echo(f"wrote {plot}")
    if records:
        run.records.save(records)
        typer.echo(f"wrote {records}")
