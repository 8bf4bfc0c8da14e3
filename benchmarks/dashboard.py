"""The live dashboard (/dashboard): what it costs the router, and the picture it draws.

A server (embedded bundle, SlackFit, 1 worker, no gRPC) and a headless Debian chromium driven
by selenium (``apt-get install chromium chromium-driver``; ``make browser``). Router CPU is
the CPU time of the server's main thread, its event loop (router, HTTP front end, dashboard
endpoint; the worker is another process), read with ns resolution from /proc/PID/schedstat.

1. **Cost under load.** Poisson load at ``--rate`` req/s for ``--seconds`` per phase, in
   ``--rounds`` pairs: *closed* (the browser on about:blank) then *open* (the browser on
   /dashboard, polling twice a second), each after 2 s for the previous phase's queue to
   drain. Per phase: router CPU / requests sent. Reported: the median of each kind
   (``router_cpu_us_per_request_closed`` / ``_open``) and ``overhead_pct`` = 100 x (open /
   closed - 1), with the attainment and the browser's own CPU per second (chromium on the
   same cores competes with the server). On a busy machine this difference is small against
   the noise between phases, so the cost of one poll is also measured amplified:
2. **Cost of a poll.** Pairs of idle phases of ``--idle-seconds``: nobody polling, then a
   keep-alive client polling ``?since=LAST`` like the page but at ``--poll-hz`` (default 50,
   25 x the page's rate). Router CPU per poll = the difference / polls (median over pairs,
   HTTP handling included); an open page costs twice that per second
   (``dashboard_router_cpu_ms_per_s``), and ``dashboard_overhead_pct_at_rate`` puts it
   against the closed per-request figure at ``--rate``. In this process: one batch record
   appended to the ring (ns), one poll's answer with 100 new batches (us, JSON included; a
   poll during load carries the batches of half a second) and a page's first answer on a
   full ring (the newest 2,000 batches and the model; ms).
3. **Picture** (run first). A fresh server and page (``/dashboard?window=30``), then a burst:
   ``--calm-rate`` for 4 s, ``--burst-rate`` for 3 s, ``--calm-rate`` for 4 s. Reported: the
   SubNets on the page's timeline and their accuracy range, the mean served accuracy and
   SubNets in the calm and burst phases (client records), and the screenshot
   ``benchmarks/results/dashboard.png``.

The functions that open the browser, build the burst and watch the page are shared with
tests/test_dashboard_browser.py.

Usage: python -m benchmarks.dashboard [--rate 100] [--seconds 10] [--rounds 3] [--idle-seconds 10]
                                      [--poll-hz 50]
Writes benchmarks/results/dashboard.json and dashboard.png.
"""
from __future__ import annotations

import argparse
import http.client
import json
import shutil
import os
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
def burst_trace(calm_rate: float, burst_rate: float, calm_s: float = 2.0, burst_s: float = 1.5,
                seed: int = 0) -> Trace:
    """Poisson arrivals at ``calm_rate`` for ``calm_s``, ``burst_rate`` for ``burst_s``, then
    ``calm_rate`` for ``calm_s`` again (steps of 10 ms between the levels)."""
    t1, t2 = calm_s, calm_s + burst_s
    knots = np.array([0.0, t1, t1 + 0.01, t2, t2 + 0.01, t2 + calm_s])
    rates = np.array([calm_rate, calm_rate, burst_rate, burst_rate, calm_rate, calm_rate])
    return modulated_gamma(knots, rates, 1.0, seed, f"burst-{calm_rate:g}-{burst_rate:g}")


def send(srv: ServerProcess, trace: Trace, payloads: PayloadSet) -> ReplayRun:
    """Replay ``trace`` against ``srv`` (one sender, in this process)."""
    return replay(trace, payloads, SenderConfig(srv.http_url, INFER_PATH, headers=srv.auth_headers),
                  slo_ms=srv.slo_ms)


def phase_accuracy(run: ReplayRun, calm_s: float, burst_s: float) -> dict[str, Any]:
    """Served accuracy and SubNets in the calm and burst phases of :func:`burst_trace`
    (client records; requests served in time or late)."""
    rec = run.records
    served = rec.subnet >= 0
    burst = (rec.scheduled_s >= calm_s) & (rec.scheduled_s < calm_s + burst_s)
    out: dict[str, Any] = {}
    for name, sel in (("calm", served & ~burst), ("burst", served & burst)):
        out[name] = {"requests": int(sel.sum()), "mean_accuracy": float(rec.accuracy[sel].mean()) if sel.any() else None,
                     "subnets": len(set(rec.subnet[sel].tolist()))}
    return out


# --- the measurements --------------------------------------------------------------------------
def router_cpu_s(srv: ServerProcess) -> float:
    """CPU time of the server's main thread (its event loop), ns resolution where Linux's
    schedstat exists; else the whole process's user + system time (10-ms ticks)."""
    try:
        with open(f"/proc/{srv.pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except OSError:
        t = psutil.Process(srv.pid).cpu_times()
        return t.user + t.system


def browser_cpu_s(driver: Any) -> float:
    """User + system time of the browser: every process under its chromedriver (chromium,
    renderers, GPU and utility processes; one that exits takes its time with it)."""
    total = 0.0
    for p in psutil.Process(driver.service.process.pid).children(recursive=True):
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def cost_phase(srv: ServerProcess, driver: Any, trace: Trace, payloads: PayloadSet) -> dict[str, Any]:
    before, browser_before = router_cpu_s(srv), browser_cpu_s(driver)
    run = send(srv, trace, payloads)
    cpu, browser = router_cpu_s(srv) - before, browser_cpu_s(driver) - browser_before
    s = summarize(run.records, wall_s=run.wall_s)
    return {"requests": len(trace), "router_cpu_s": cpu, "router_cpu_us_per_request": cpu / len(trace) * 1e6,
            "browser_cpu_ms_per_s": browser / run.wall_s * 1000.0,
            "slo_attainment": s["slo_attainment"], "mean_accuracy": s["mean_accuracy"]}


def idle_phase(srv: ServerProcess, seconds: float, poll_hz: float | None) -> dict[str, Any]:
    """No load for ``seconds``; with ``poll_hz``, a keep-alive client polls the dashboard's
    data endpoint as the page does (``since`` = the last record seen) that often."""
    conn = http.client.HTTPConnection(srv.config.host, int(srv.info["http_port"]), timeout=10)
    since, polls = server_data(srv)["last_seq"], 0
    time.sleep(SETTLE_S)
    before, t0 = router_cpu_s(srv), time.monotonic()
    while (now := time.monotonic()) < t0 + seconds:
        if poll_hz is None:
            time.sleep(t0 + seconds - now)
            continue
        conn.request("GET", f"/v2/dashboard/data?since={since}", headers=srv.auth_headers)
        since = json.loads(conn.getresponse().read())["last_seq"]
        polls += 1
        time.sleep(max(0.0, t0 + polls / poll_hz - time.monotonic()))
    cpu, wall = router_cpu_s(srv) - before, time.monotonic() - t0
    conn.close()
    return {"seconds": wall, "polls": polls, "router_cpu_s": cpu, "router_cpu_ms_per_s": cpu / wall * 1000.0}


SETTLE_S = 2.0  # before every phase: what the previous one left queued drains first
PAGE_POLLS_PER_S = 2.0  # dashboard.js polls every 500 ms


def show(driver: Any, srv: ServerProcess, kind: str) -> None:
    """Open the dashboard (``kind`` "open", waiting for its first poll) or leave it
    ("closed"), then let the server settle for SETTLE_S."""
    driver.get(srv.http_url + "/dashboard" if kind == "open" else "about:blank")
    if kind == "open":
        wait_for(driver, lambda s: s["polls"] >= 1)
    time.sleep(SETTLE_S)


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
    since = log.batches[-1][0]
    for i in range(100):
        log.batches.append((next(log.seq), now + i * 0.005, i % len(profile), 8, 7, 6.25, 0, 12))
    router.close_activity_second(now + 0.5)
    polls = 2000
    poll_s = timeit.timeit(lambda: json.dumps(dash.snapshot(since)).encode(), number=polls)
    first_s = timeit.timeit(lambda: json.dumps(dash.snapshot(0)).encode(), number=50)  # a page's first poll
    return {"ring_append_ns_per_batch": append_s / n * 1e9, "poll_us_100_batches": poll_s / polls * 1e6,
            "poll_bytes_100_batches": len(json.dumps(dash.snapshot(since))),
            "first_poll_ms_full_ring": first_s / 50 * 1e3, "first_poll_bytes": len(json.dumps(dash.snapshot(0)))}


def _shown(path: Path) -> str:
    """``path`` relative to the repository where it is inside (no machine path in results)."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def measure_cost(args: argparse.Namespace) -> dict[str, Any]:
    """Sections 1 and 2 of the module's docstring, on one server and one browser."""
    phases: list[dict[str, Any]] = []
    with ServerProcess(workers=1, grpc_port=None) as srv:
        driver = open_browser()
        try:
            payloads = payloads_from_bundle(None, slo_ms=srv.slo_ms, outputs=["class_index"])
            send(srv, poisson(args.rate, 2.0, seed=99), payloads)  # warm the connections and the calibration
            for k in range(args.rounds):
                for kind in ("closed", "open"):
                    show(driver, srv, kind)
                    row = {"load": "rate", "round": k, "dashboard": kind,
                           **cost_phase(srv, driver, poisson(args.rate, args.seconds, seed=k), payloads)}
                    phases.append(row)
                    print(f"round {k} dashboard {kind:>6}: {row['router_cpu_us_per_request']:.1f} us router CPU "
                          f"per request, attainment {row['slo_attainment']:.4f}, browser "
                          f"{row['browser_cpu_ms_per_s']:.0f} ms CPU per second")
            errors = severe_console_errors(driver)
            driver.get("about:blank")
            for k in range(args.rounds):
                for kind, hz in (("closed", None), ("polled", args.poll_hz)):
                    phases.append({"load": "idle", "round": k, "dashboard": kind,
                                   **idle_phase(srv, args.idle_seconds, hz)})
                    print(f"idle round {k} {kind:>6}: {phases[-1]['router_cpu_ms_per_s']:.2f} ms router CPU per "
                          f"second, {phases[-1]['polls']} polls")
        finally:
            driver.quit()

    def pick(load: str, kind: str, key: str) -> list[float]:
        return [p[key] for p in phases if p["load"] == load and p["dashboard"] == kind]

    c = statistics.median(pick("rate", "closed", "router_cpu_us_per_request"))
    o = statistics.median(pick("rate", "open", "router_cpu_us_per_request"))
    idle = [p for p in phases if p["load"] == "idle"]
    per_poll_us = statistics.median((polled["router_cpu_s"] - closed["router_cpu_s"] * polled["seconds"] / closed["seconds"])
                                    / polled["polls"] * 1e6 for closed, polled in zip(idle[::2], idle[1::2]))
    per_s = PAGE_POLLS_PER_S * per_poll_us / 1000.0
    return {"router_cpu_us_per_request_closed": c, "router_cpu_us_per_request_open": o,
            "overhead_pct": 100.0 * (o / c - 1.0),
            "slo_attainment_closed": statistics.median(pick("rate", "closed", "slo_attainment")),
            "slo_attainment_open": statistics.median(pick("rate", "open", "slo_attainment")),
            "browser_cpu_ms_per_s_closed": statistics.median(pick("rate", "closed", "browser_cpu_ms_per_s")),
            "browser_cpu_ms_per_s_open": statistics.median(pick("rate", "open", "browser_cpu_ms_per_s")),
            "idle_router_cpu_ms_per_s_closed": statistics.median(pick("idle", "closed", "router_cpu_ms_per_s")),
            "idle_router_cpu_ms_per_s_polled": statistics.median(pick("idle", "polled", "router_cpu_ms_per_s")),
            "router_cpu_us_per_poll": per_poll_us, "dashboard_router_cpu_ms_per_s": per_s,
            "dashboard_overhead_pct_at_rate": 100.0 * per_s * 1000.0 / args.rate / c,
            "phases": phases, "console_errors": errors}


def picture(args: argparse.Namespace) -> dict[str, Any]:
    """Section 3 of the module's docstring: a fresh server, a burst, the screenshot."""
    calm_s, burst_s = 4.0, 3.0
    with ServerProcess(workers=1, grpc_port=None) as srv:
        payloads = payloads_from_bundle(None, slo_ms=srv.slo_ms, outputs=["class_index"])
        driver = open_browser()
        try:
            driver.get(srv.http_url + "/dashboard?window=30")
            before = wait_for(driver, lambda s: s["polls"] >= 1)
            trace = burst_trace(args.calm_rate, args.burst_rate, calm_s, burst_s)
            run, samples = watch_load(driver, lambda: send(srv, trace, payloads))
            last = server_data(srv)["last_seq"]
            wait_for(driver, lambda s: s["last_seq"] >= last)
            time.sleep(0.6)  # one more poll: every chart drawn with everything
            after = page_status(driver)
            args.screenshot.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.screenshot))
            errors = severe_console_errors(driver)
        finally:
            driver.quit()
    return {"calm_rate": args.calm_rate, "burst_rate": args.burst_rate, "calm_s": calm_s, "burst_s": burst_s,
            "requests": len(run.records), "slo_attainment": summarize(run.records)["slo_attainment"],
            "page_before": before, "page_after": after, "page_samples_while_loading": len(samples),
            "page_batches_grew_while_loading": sum(b["batches"] > a["batches"] for a, b in zip(samples, samples[1:])),
            "timeline_subnets": after["distinct"], "timeline_accuracy_range": [after["acc_min"], after["acc_max"]],
            "phases": phase_accuracy(run, calm_s, burst_s), "console_errors": errors,
            "screenshot": _shown(args.screenshot)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=100.0, help="Poisson rate of the loaded phases (req/s)")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of one loaded phase (s)")
    ap.add_argument("--idle-seconds", type=float, default=10.0, help="length of one idle phase (s)")
    ap.add_argument("--poll-hz", type=float, default=50.0, help="polls per second in the polled idle phases")
    ap.add_argument("--rounds", type=int, default=3, help="pairs of phases (closed, open) of each kind")
    ap.add_argument("--calm-rate", type=float, default=100.0)
    ap.add_argument("--burst-rate", type=float, default=1000.0)
    ap.add_argument("--screenshot", type=Path, default=RESULTS / "dashboard.png")
    args = ap.parse_args()

    load_before = os.getloadavg()
    micro = dashboard_micro()
    print(f"ring append {micro['ring_append_ns_per_batch']:.0f} ns/batch; one poll with 100 new batches "
          f"{micro['poll_us_100_batches']:.0f} us, {micro['poll_bytes_100_batches']} bytes; a first poll on a full "
          f"ring {micro['first_poll_ms_full_ring']:.1f} ms, {micro['first_poll_bytes']} bytes")
    burst = picture(args)
    print(f"burst: the timeline shows {burst['timeline_subnets']:.0f} SubNets, accuracy "
          f"{burst['timeline_accuracy_range'][0]:.4f}-{burst['timeline_accuracy_range'][1]:.4f}; served accuracy "
          f"calm {burst['phases']['calm']['mean_accuracy']}, burst {burst['phases']['burst']['mean_accuracy']}; "
          f"screenshot {args.screenshot}")
    cost = measure_cost(args)
    print(f"router CPU per request at {args.rate:g} req/s: closed {cost['router_cpu_us_per_request_closed']:.1f} us, "
          f"open {cost['router_cpu_us_per_request_open']:.1f} us ({cost['overhead_pct']:+.1f} %); an open page "
          f"costs {cost['dashboard_router_cpu_ms_per_s']:.2f} ms of router CPU per second "
          f"({cost['router_cpu_us_per_poll']:.0f} us per poll) "
          f"({cost['dashboard_overhead_pct_at_rate']:.2f} % at {args.rate:g} req/s)")
    write_json("dashboard", {
        "config": {"rate": args.rate, "seconds": args.seconds, "idle_seconds": args.idle_seconds,
                   "poll_hz": args.poll_hz,
                   "rounds": args.rounds, "workers": 1, "policy": "slackfit", "poll_ms": 500,
                   "browser": "headless Debian chromium (selenium)", "cpu_count": psutil.cpu_count(),
                   "load_average_before": load_before, "load_average_after": os.getloadavg(),
                   "router_cpu": "CPU time of the server's main thread (/proc/PID/schedstat) over the phase"},
        **cost, **micro, "burst": burst})


if __name__ == "__main__":
    main()
