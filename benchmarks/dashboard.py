"""The live dashboard (/dashboard): what it costs the router, and the picture it draws.

One server (embedded bundle, SlackFit, 1 worker, no gRPC) and one headless Debian chromium
driven by selenium (``apt-get install chromium chromium-driver``; ``make browser``).

1. **Cost.** Poisson load at ``--rate`` req/s for ``--seconds`` per phase, in ``--rounds``
   pairs of phases: *closed* (the browser on about:blank) then *open* (the browser on
   /dashboard, polling twice a second). Router CPU = user + system time of the server's main
   process (router, HTTP front end, dashboard endpoint; the worker is another process) over
   the phase, divided by the requests sent in it. Reported: the median of each kind and
   ``overhead_pct`` = 100 x (open / closed - 1), every phase's figure, and the dashboard's
   own work measured in this process: one batch record appended to the ring (ns) and one
   poll's answer (the newest 100 batch records and a second, as JSON; us).
2. **Picture.** A burst against the open page: ``--calm-rate`` for 2 s, ``--burst-rate`` for
   1.5 s, ``--calm-rate`` for 2 s. Reported: how many SubNets the page's SubNet timeline
   shows and their accuracy range, the mean served accuracy in the calm and burst phases
   (from the client's records) and the screenshot ``benchmarks/results/dashboard.png``.

The functions that open the browser, build the burst and watch the page are shared with
tests/test_dashboard_browser.py.

Usage: python -m benchmarks.dashboard [--rate 400] [--seconds 10] [--rounds 3]
Writes benchmarks/results/dashboard.json and dashboard.png.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import threading
import time
import timeit
import urllib.request
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import psutil

from benchmarks._common import RESULTS, ROOT, write_json
from superserve.loadgen import PayloadSet, SenderConfig, payloads_from_bundle, replay, summarize
from superserve.loadgen.runner import ReplayRun
from superserve.serving import ServerProcess
from superserve.workload import Trace, poisson
from superserve.workload.arrivals import modulated_gamma

R = TypeVar("R")
INFER_PATH = "/v2/models/supernet/infer"
CALM_S, BURST_S = 2.0, 1.5  # the burst: calm, burst, calm again (CALM_S)


# --- the browser -------------------------------------------------------------------------------
def browser_paths() -> tuple[str | None, str | None]:
    """Debian's chromium and chromedriver (None where missing)."""
    return shutil.which("chromium"), shutil.which("chromedriver")


def open_browser(width: int = 1400, height: int = 1900) -> Any:
    """A headless chromium under selenium, on the system's driver (selenium never downloads
    one: the driver's path is given). Raises saying what to install when one is missing."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = browser_paths()
    if binary is None or driver is None:
        raise RuntimeError("need Debian's chromium and chromedriver: apt-get install chromium chromium-driver "
                           "(or `make browser`)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    # --no-sandbox: chromium refuses to run as root with its sandbox (CI containers run as root).
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                "--disable-extensions", "--hide-scrollbars", f"--window-size={width},{height}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


_STATUS_JS = """
const s = document.getElementById('status').dataset, c = document.getElementById('chart-subnets').dataset;
return [s.polls, s.lastSeq, s.batches, s.seconds, s.errors, c.points, c.distinct, c.accMin, c.accMax];
"""


def page_status(driver: Any) -> dict[str, float]:
    """What the page says it has: polls, last record number, batch and second records received,
    poll errors, and its SubNet timeline (points drawn, distinct SubNets, their accuracy range)."""
    values = driver.execute_script(_STATUS_JS)
    keys = ("polls", "last_seq", "batches", "seconds", "errors", "points", "distinct", "acc_min", "acc_max")
    return {k: float(v) if v not in (None, "") else float("nan") for k, v in zip(keys, values)}


def wait_for(driver: Any, ok: Callable[[dict[str, float]], bool], timeout_s: float = 10.0) -> dict[str, float]:
    """Poll the page's status until ``ok`` holds; raises with the last status after ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while True:
        status = page_status(driver)
        if ok(status):
            return status
        if time.monotonic() > end:
            raise TimeoutError(f"the dashboard did not get there in {timeout_s:g} s: {status}")
        time.sleep(0.1)


def severe_console_errors(driver: Any) -> list[str]:
    """The page's console errors since the last call (script errors, CSP refusals, failed loads)."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def watch_load(driver: Any, load: Callable[[], R], every_s: float = 0.5) -> tuple[R, list[dict[str, float]]]:
    """Run ``load`` in a thread and sample the page's status every ``every_s`` while it runs."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = load()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=run, name="load", daemon=True)
    thread.start()
    samples = []
    while thread.is_alive():
        samples.append({"t": time.monotonic(), **page_status(driver)})
        thread.join(every_s)
    if "error" in box:
        raise box["error"]
    return box["value"], samples


def server_data(srv: ServerProcess) -> dict[str, Any]:
    """Everything the server's dashboard endpoint has (what the page must catch up with)."""
    req = urllib.request.Request(srv.http_url + "/v2/dashboard/data?since=0", headers=srv.auth_headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


# --- the load ----------------------------------------------------------------------------------
def burst_trace(calm_rate: float, burst_rate: float, seed: int = 0) -> Trace:
    """Poisson arrivals at ``calm_rate`` for CALM_S, ``burst_rate`` for BURST_S, ``calm_rate``
    for CALM_S (steps of 10 ms between the levels)."""
    t1, t2 = CALM_S, CALM_S + BURST_S
    knots = np.array([0.0, t1, t1 + 0.01, t2, t2 + 0.01, t2 + CALM_S])
    rates = np.array([calm_rate, calm_rate, burst_rate, burst_rate, calm_rate, calm_rate])
    return modulated_gamma(knots, rates, 1.0, seed, f"burst-{calm_rate:g}-{burst_rate:g}")


def send(srv: ServerProcess, trace: Trace, payloads: PayloadSet) -> ReplayRun:
    """Replay ``trace`` against ``srv`` (one sender, in this process)."""
    return replay(trace, payloads, SenderConfig(srv.http_url, INFER_PATH, headers=srv.auth_headers),
                  slo_ms=srv.slo_ms)


def phase_accuracy(run: ReplayRun) -> dict[str, Any]:
    """Served accuracy and SubNets in the calm and burst phases (client records; requests
    served in time or late)."""
    rec = run.records
    served = rec.subnet >= 0
    burst = (rec.scheduled_s >= CALM_S) & (rec.scheduled_s < CALM_S + BURST_S)
    out: dict[str, Any] = {}
    for name, sel in (("calm", served & ~burst), ("burst", served & burst)):
        out[name] = {"requests": int(sel.sum()), "mean_accuracy": float(rec.accuracy[sel].mean()) if sel.any() else None,
                     "subnets": len(set(rec.subnet[sel].tolist()))}
    return out


# --- the measurements --------------------------------------------------------------------------
def router_cpu_s(srv: ServerProcess) -> float:
    t = psutil.Process(srv.pid).cpu_times()
    return t.user + t.system


def cost_phase(srv: ServerProcess, trace: Trace, payloads: PayloadSet) -> dict[str, Any]:
    before = router_cpu_s(srv)
    run = send(srv, trace, payloads)
    cpu = router_cpu_s(srv) - before
    s = summarize(run.records, wall_s=run.wall_s)
    return {"requests": len(trace), "router_cpu_s": cpu, "router_cpu_us_per_request": cpu / len(trace) * 1e6,
            "slo_attainment": s["slo_attainment"], "mean_accuracy": s["mean_accuracy"]}


def dashboard_micro() -> dict[str, float]:
    """The dashboard's own work, timed in this process on a router without workers: one
    batch record appended (what the router adds per batch) and one poll's answer."""
    from superserve.scheduling import make_policy
    from superserve.scheduling.conventions import resolve_profile
    from superserve.serving.dashboard import Dashboard
    from superserve.serving.metrics import ServingMetrics
    from superserve.serving.model_info import ModelInfo
    from superserve.serving.router import Router

    profile = resolve_profile(None)[0]
    info = ModelInfo("supernet", (1, 28, 28), 10, profile, Path("."))

    metrics = ServingMetrics({s.id: s.accuracy for s in profile.subnets}, profile.max_batch)
    router = Router(info, make_policy("slackfit", profile), metrics, queue_capacity=1024)
    dash = Dashboard(info, router, 45.0)
    log = router.activity
    n = 200_000
    append_s = timeit.timeit("log.batches.append((next(log.seq), now, 5, 8, 8, 6.25, 0, 12))",
                             setup="now = 1234.5", globals={"log": log}, number=n)
    now = time.monotonic()
    for i in range(100):
        log.batches.append((next(log.seq), now + i * 0.005, i % len(profile), 8, 7, 6.25, 0, 12))
    router.close_activity_second(now + 0.5)
    since = log.batches[-101][0]
    polls = 2000
    poll_s = timeit.timeit(lambda: json.dumps(dash.snapshot(since)).encode(), number=polls)
    return {"ring_append_ns_per_batch": append_s / n * 1e9, "poll_us_100_batches": poll_s / polls * 1e6,
            "poll_bytes_100_batches": len(json.dumps(dash.snapshot(since)))}


def _shown(path: Path) -> str:
    """``path`` relative to the repository where it is inside (no machine path in results)."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=400.0, help="Poisson rate of the cost phases (req/s)")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of one cost phase (s)")
    ap.add_argument("--rounds", type=int, default=3, help="pairs of phases (closed, open)")
    ap.add_argument("--calm-rate", type=float, default=100.0)
    ap.add_argument("--burst-rate", type=float, default=1000.0)
    ap.add_argument("--screenshot", type=Path, default=RESULTS / "dashboard.png")
    args = ap.parse_args()

    micro = dashboard_micro()
    print(f"ring append {micro['ring_append_ns_per_batch']:.0f} ns/batch; one poll with 100 new batches "
          f"{micro['poll_us_100_batches']:.0f} us, {micro['poll_bytes_100_batches']} bytes")
    phases: list[dict[str, Any]] = []
    with ServerProcess(workers=1, grpc_port=None) as srv:
        driver = open_browser()
        try:
            payloads = payloads_from_bundle(None, slo_ms=srv.slo_ms, outputs=["class_index"])
            send(srv, poisson(args.rate, 2.0, seed=99), payloads)  # warm the connections and the calibration
            for k in range(args.rounds):
                for kind in ("closed", "open"):
                    driver.get(srv.http_url + "/dashboard" if kind == "open" else "about:blank")
                    if kind == "open":
                        wait_for(driver, lambda s: s["polls"] >= 1)
                    row = {"round": k, "dashboard": kind,
                           **cost_phase(srv, poisson(args.rate, args.seconds, seed=k), payloads)}
                    if kind == "open":
                        row["page_polls"] = page_status(driver)["polls"]
                    phases.append(row)
                    print(f"round {k} dashboard {kind:>6}: {row['router_cpu_us_per_request']:.1f} us router CPU "
                          f"per request, attainment {row['slo_attainment']:.4f}")
            # The picture: a fresh page, then the burst.
            driver.get(srv.http_url + "/dashboard")
            wait_for(driver, lambda s: s["polls"] >= 1)
            before = page_status(driver)
            run, samples = watch_load(driver, lambda: send(srv, burst_trace(args.calm_rate, args.burst_rate), payloads))
            last = server_data(srv)["last_seq"]
            after = wait_for(driver, lambda s: s["last_seq"] >= last)
            time.sleep(0.6)  # one more poll: the timeline drawn with everything
            after = page_status(driver)
            args.screenshot.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.screenshot))
            errors = severe_console_errors(driver)
        finally:
            driver.quit()
    closed = [p["router_cpu_us_per_request"] for p in phases if p["dashboard"] == "closed"]
    opened = [p["router_cpu_us_per_request"] for p in phases if p["dashboard"] == "open"]
    c, o = statistics.median(closed), statistics.median(opened)
    burst = phase_accuracy(run)
    out = {
        "config": {"rate": args.rate, "seconds": args.seconds, "rounds": args.rounds, "workers": 1,
                   "policy": "slackfit", "poll_ms": 500, "slo_ms": srv.slo_ms,
                   "browser": "headless Debian chromium (selenium)", "cpu_count": psutil.cpu_count(),
                   "router_cpu": "user + system time of the server's main process over the phase / requests sent"},
        "router_cpu_us_per_request_closed": c, "router_cpu_us_per_request_open": o,
        "overhead_pct": 100.0 * (o / c - 1.0), "phases": phases, **micro,
        "burst": {"calm_rate": args.calm_rate, "burst_rate": args.burst_rate, "calm_s": CALM_S, "burst_s": BURST_S,
                  "requests": len(run.records), "slo_attainment": summarize(run.records)["slo_attainment"],
                  "page_before": before, "page_after": after,
                  "page_samples_while_loading": len(samples),
                  "page_batches_grew_while_loading": sum(b["batches"] > a["batches"]
                                                         for a, b in zip(samples, samples[1:])),
                  "timeline_subnets": after["distinct"], "timeline_accuracy_range": [after["acc_min"], after["acc_max"]],
                  "phases": burst, "console_errors": errors,
                  "screenshot": _shown(args.screenshot)},
    }
    print(f"router CPU per request: closed {c:.1f} us, open {o:.1f} us ({out['overhead_pct']:+.1f} %)")
    print(f"burst: the timeline shows {after['distinct']:.0f} SubNets, accuracy {after['acc_min']:.4f}-"
          f"{after['acc_max']:.4f}; served accuracy calm {burst['calm']['mean_accuracy']}, "
          f"burst {burst['burst']['mean_accuracy']}; screenshot {args.screenshot}")
    write_json("dashboard", out)


if __name__ == "__main__":
    main()
