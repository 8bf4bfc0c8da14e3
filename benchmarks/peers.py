"""Peers side by side (issue 15, part 3): superserve, LitServe and Ray Serve serving the same
extracted SubNets, driven by one open-loop Poisson client, ranked by the highest rate whose
SLO attainment holds at 0.999.

    python -m benchmarks.peers                      # everything, full runs (about 1-1.5 h)
    python -m benchmarks.peers --quick              # ~4 s runs, no repeats (a smoke test)
    python -m benchmarks.peers --systems superserve litserve --models smallest

Writes benchmarks/results/peers.json (--quick: peers_quick.json) as
``{system: {model: {max_rate_at_999, p50_ms, p99_ms, config, configs: {name: {...}}}}}`` plus
``_meta`` (SLO, durations, machine load). See docs/peers.md for what is measured and how.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from benchmarks._peers_client import open_loop, settle
from benchmarks._peers_models import MODELS, images, profile, subnet_id
from benchmarks._peers_search import search_max_rate

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SYSTEMS = ("superserve", "litserve", "ray_serve")
SLO_MS = 45.0
MAX_BATCH = 16

# Where each search starts (requests/s): about half of what was measured earlier on a quiet
# 2-core machine, so doubling brackets the answer in one or two runs.
START_RATES = {
    ("superserve", "clipper+"): {"noop": 1000, "smallest": 500, "largest": 150},
    ("superserve", "slackfit"): {"slackfit": 300},
    ("superserve", "clipper+_frontdoor"): {"noop": 1000, "smallest": 500, "largest": 150},
    ("superserve", "slackfit_frontdoor"): {"slackfit": 300},
    ("litserve", "default"): {"noop": 200, "smallest": 150, "largest": 80},
    ("litserve", "fast_queue"): {"noop": 200, "smallest": 150, "largest": 80},
    ("ray_serve", "proxy"): {"noop": 25, "smallest": 15, "largest": 8},
    ("ray_serve", "direct_ingress"): {"noop": 300, "smallest": 250, "largest": 80},
    ("ray_serve", "throughput_optimized"): {"noop": 300, "smallest": 250, "largest": 80},
}


# --- servers ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One system under test: started in its own process (group), stopped on exit."""

    url: str = ""
    headers: dict[str, str] = {}

    def start(self) -> "Server":
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> "Server":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SuperserveServer(Server):
    """`superserve serve` (through superserve.serving.ServerProcess: the CLI with a config file)."""

    def __init__(self, model: str, config: str, frontends: int = 0) -> None:
        from superserve.serving.process import ServerProcess

        settings: dict[str, Any] = dict(workers=1, threads_per_worker=1, slo_ms=SLO_MS, grpc_port=None,
                                        host="127.0.0.1")
        if config == "slackfit":
            settings.update(policy="slackfit", warmup_runs=1)
        else:  # Clipper+: one fixed SubNet, the largest batch that fits the SLO
            sid = subnet_id(model)
            settings.update(policy="clipper+", subnet=sid, subnets=[sid], noop=(model == "noop"))
        if config.endswith("_frontdoor"):  # `--frontends N`: HTTP in N front-end processes (docs/frontdoor.md)
            settings.update(frontends=frontends)
        self.proc = ServerProcess(startup_timeout_s=300.0, **settings)
        self.describe = " ".join(f"{k}={v}" for k, v in settings.items())

    def start(self) -> "Server":
        self.proc.start()
        self.url = self.proc.http_url + "/v2/models/supernet/infer"
        return self

    def stop(self) -> None:
        self.proc.stop()


class SubprocessServer(Server):
    """A peer's server script (benchmarks/_peers_litserve.py, _peers_ray.py) in a new session,
    so the whole process group can be ended; its log goes to a temporary file."""

    def __init__(self, argv: list[str], port: int, path: str, describe: str, ready_line: str | None = None,
                 health: str | None = None, stop_signal: int = signal.SIGTERM, stop_wait_s: float = 20.0,
                 signal_group: bool = True) -> None:
        self.argv, self.port, self.path, self.describe = argv, port, path, describe
        self.ready_line, self.health = ready_line, health
        self.stop_signal, self.stop_wait_s, self.signal_group = stop_signal, stop_wait_s, signal_group
        self.proc: subprocess.Popen | None = None
        self.log = Path(tempfile.mkstemp(prefix="peers-", suffix=".log")[1])

    def start(self) -> "Server":
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        deadline = time.monotonic() + 240
        port = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.describe} exited with {self.proc.returncode}:\n{self.tail()}")
            if self.ready_line:
                for line in self.log.read_text(errors="replace").splitlines():
                    if line.startswith(self.ready_line):
                        port = int(line.split()[1])
            elif self.health and _get_ok(f"http://127.0.0.1:{self.port}{self.health}"):
                port = self.port
            if port is not None:
                self.url = f"http://127.0.0.1:{port}{self.path}"
                return self
            time.sleep(0.25)
        raise RuntimeError(f"{self.describe} not ready after 240 s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None and not _group_alive(self.proc.pid):
            return
        try:
            if self.signal_group:
                os.killpg(self.proc.pid, self.stop_signal)
            elif self.proc.poll() is None:
                os.kill(self.proc.pid, self.stop_signal)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(self.stop_wait_s)
        except subprocess.TimeoutExpired:
            pass
        if _group_alive(self.proc.pid):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(5)

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _get_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1.0) as r:
            return r.status == 200
    except OSError:
        return False


def make_server(system: str, model: str, config: str, frontends: int = 0) -> Server:
    py = sys.executable
    if system == "superserve":
        return SuperserveServer(model, config, frontends)
    if system == "litserve":
        port = free_port()
        argv = [py, "-m", "benchmarks._peers_litserve", "--model", model, "--port", str(port),
                "--max-batch-size", str(MAX_BATCH)] + (["--fast-queue"] if config == "fast_queue" else [])
        return SubprocessServer(argv, port, "/predict", f"litserve {config} {model}", health="/health")
    if system == "ray_serve":
        port = free_port()
        argv = [py, "-m", "benchmarks._peers_ray", "--model", model, "--port", str(port),
                "--max-batch-size", str(MAX_BATCH),
                "--ingress", "proxy" if config == "proxy" else "direct"]
        if config == "throughput_optimized":
            argv.append("--throughput-optimized")
        # SIGTERM to the script alone (not to its raylet and GCS): it shuts Serve and Ray down
        # itself; whatever is left of the group is killed after 40 s.
        return SubprocessServer(argv, port, "/", f"ray_serve {config} {model}", ready_line="READY_PORT",
                                stop_signal=signal.SIGTERM, stop_wait_s=40.0, signal_group=False)
    raise ValueError(system)


def configs_of(system: str, model: str, frontends: int = 0) -> list[str]:
    if system == "superserve":
        base = ["slackfit"] if model == "slackfit" else ["clipper+"]
        return base + [f"{c}_frontdoor" for c in base] if frontends else base
    if model == "slackfit":
        return []
    return {"litserve": ["default", "fast_queue"], "ray_serve": ["proxy", "direct_ingress", "throughput_optimized"]}[system]


# --- bodies -------------------------------------------------------------------------------
def bodies_for(system: str, imgs: list[list[float]]) -> list[bytes]:
    """Each system's natural JSON API, the same images."""
    if system == "superserve":  # KServe v2 JSON (input name and shape as the model's metadata says)
        return [json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                        "data": x}]}).encode() for x in imgs]
    return [json.dumps({"input": x}).encode() for x in imgs]


# --- raw worker rate ----------------------------------------------------------------------
def raw_inference_rate(model: str) -> dict[str, Any]:
    """superserve's worker throughput for the SubNet at its best batch (images/s), from the
    bundle's latency profile: max over batches b whose p99 fits the SLO of b / p50(b)."""
    s = profile().by_id(subnet_id(model))
    best = max((b for b in range(1, s.max_batch + 1) if s.latency_ms(b, "p99") <= SLO_MS),
               key=lambda b: b / s.latency_ms(b, "p50"))
    return {"raw_inference_rate": round(best * 1000.0 / s.latency_ms(best, "p50"), 1), "raw_batch": best,
            "raw_source": "superserve/data/embedded/profile.json (p50)"}


def measured_raw_rate(model: str, seconds: float) -> float:
    """The same, measured now on this host: the SuperNet actuated to the SubNet (as a worker
    runs it), one torch thread, back-to-back forward passes at the profile's best batch."""
    import torch

    from superserve.bundle_layout import BundleLayout
    from superserve.embedded import EMBEDDED_DIR
    from superserve.supernet import load_supernet

    torch.set_num_threads(1)
    layout = BundleLayout(EMBEDDED_DIR)
    net = load_supernet(layout.weights, layout.norm).eval()
    b = raw_inference_rate(model)["raw_batch"]
    x = torch.randn(b, 1, 28, 28)
    with torch.inference_mode():
        net.actuate(subnet_id(model))
        for _ in range(3):
            net(x)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            net(x)
            n += 1
    return round(n * b / (time.perf_counter() - t0), 1)


# --- one (system, model, config) ----------------------------------------------------------
def measure(system: str, model: str, config: str, args: argparse.Namespace, imgs: list[list[float]]) -> dict:
    served = "smallest" if model == "slackfit" else model
    bodies = bodies_for(system, imgs)
    server = make_server(system, served, config, args.frontends)
    t0 = time.monotonic()
    seed = [zlib.crc32(f"{system}/{model}/{config}".encode()) & 0xFFFF]
    with server:
        startup_s = time.monotonic() - t0
        print(f"  {system}/{model}/{config}: ready in {startup_s:.1f} s at {server.url} ({server.describe})",
              flush=True)

        def run(rate: float) -> dict:
            seed[0] += 1
            res = asyncio.run(open_loop(server.url, bodies, rate, args.duration, SLO_MS,
                                        headers=server.headers, seed=seed[0]))
            s = res.summary()
            s["settle_s"] = round(asyncio.run(settle(server.url, bodies[0], SLO_MS, headers=server.headers)), 2)
            print(f"    rate {rate:8.1f}/s: attainment {s['attainment']:.4f}  p50 {s['p50_ms']:7.2f} ms  "
                  f"p99 {s['p99_ms']:8.2f} ms  ok {s['ok']}/{s['sent']}  client lag {s['max_lag_ms']:.1f} ms"
                  + (f"  errors {s['errors']}" if s.get("errors") else ""), flush=True)
            return s

        start = START_RATES[(system, config)][model] * args.start_scale
        res = search_max_rate(run, start=start, repeats=args.repeats, rel_tol=args.rel_tol,
                              min_rate=args.min_rate, max_rate=args.max_rate, max_runs=args.max_runs)
    print(f"  => {system}/{model}/{config}: {res.max_rate:.1f} req/s at >= 0.999", flush=True)
    return {"max_rate_at_999": round(res.max_rate, 1), "p50_ms": res.p50_ms, "p99_ms": res.p99_ms,
            "server": server.describe, "startup_s": round(startup_s, 1), "runs_at_max": res.runs,
            "trace": res.trace}


def summarize(entry: dict) -> dict:
    """The best config of one (system, model) on top, every config beside it."""
    configs = entry["configs"]
    best = max(configs, key=lambda c: configs[c]["max_rate_at_999"])
    return {"max_rate_at_999": configs[best]["max_rate_at_999"], "p50_ms": configs[best]["p50_ms"],
            "p99_ms": configs[best]["p99_ms"], "config": best, **{k: v for k, v in entry.items() if k != "configs"},
            "configs": configs}


def add_ratios(out: dict) -> None:
    ss = out.get("superserve", {})
    for model, entry in ss.items():
        peer_model = "smallest" if model == "slackfit" else model
        peers = {p: out[p][peer_model]["max_rate_at_999"] for p in SYSTEMS[1:]
                 if peer_model in out.get(p, {})}
        if peers:
            best_peer = max(peers, key=peers.get)
            entry["best_peer"] = best_peer
            entry["vs_best_peer"] = (round(entry["max_rate_at_999"] / peers[best_peer], 2)
                                     if peers[best_peer] > 0 else None)
        for key in ("raw_inference_rate", "raw_inference_rate_measured"):
            if entry.get(key):
                suffix = "" if key == "raw_inference_rate" else "_measured"
                entry[f"ratio_to_raw{suffix}"] = round(entry["max_rate_at_999"] / entry[key], 3)


# --- perf_analyzer (Triton's load generator) against superserve ---------------------------
PA_VENV = ROOT / "build" / "pa-venv"


def perf_analyzer_path() -> Path | None:
    """perf_analyzer from tritonclient==2.51.0 in build/pa-venv (benchmarks/perf_analyzer.sh
    installs it; it needs Debian's libb64-0d), or None."""
    exe = PA_VENV / "bin" / "perf_analyzer"
    return exe if exe.exists() and Path("/lib/x86_64-linux-gnu/libb64.so.0d").exists() else None


def perf_analyzer_figures(rates: list[float], args: argparse.Namespace, imgs: list[list[float]]) -> dict:
    """perf_analyzer --async, Poisson, over HTTP at each rate against superserve Clipper+ on the
    smallest SubNet. The server answers late requests late (late=serve): perf_analyzer aborts
    the whole run at the first non-OK answer, so a shedding server cannot be measured past it.
    It reports latency percentiles and throughput, not SLO attainment."""
    import csv

    exe = perf_analyzer_path()
    if exe is None:
        return {"note": "perf_analyzer not found: run benchmarks/perf_analyzer.sh once (it installs "
                        "tritonclient==2.51.0 into build/pa-venv; needs apt-get install libb64-0d)"}
    cudart = next(iter(sorted(PA_VENV.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib"))), None)
    env = dict(os.environ, LD_LIBRARY_PATH=f"{cudart}:{os.environ.get('LD_LIBRARY_PATH', '')}")
    from superserve.serving.process import ServerProcess

    sid = subnet_id("smallest")
    out: dict[str, Any] = {"server": f"superserve clipper+ {sid}, late=serve, slo_ms {SLO_MS:g}",
                           "command": "", "rates": {}}
    with tempfile.TemporaryDirectory(prefix="peers-pa-") as tmp, \
            ServerProcess(workers=1, threads_per_worker=1, slo_ms=SLO_MS, grpc_port=None, policy="clipper+",
                          subnet=sid, subnets=[sid], late="serve") as srv:
        data = Path(tmp) / "input.json"
        data.write_text(json.dumps({"data": [{"input": {"content": x, "shape": [1, 28, 28]}} for x in imgs]}))
        for rate in rates:
            csv_path = Path(tmp) / f"pa_{rate:g}.csv"
            argv = [str(exe), "-m", "supernet", "-u", srv.http_address, "-i", "http", "--async",
                    "--request-rate-range", f"{rate:g}", "--request-distribution", "poisson",
                    "--request-count", str(max(100, int(rate * args.duration))), "--input-data", str(data),
                    "--percentile", "99", "-f", str(csv_path)]
            shown = ["build/pa-venv/bin/perf_analyzer"] + ["HOST:PORT" if a == srv.http_address else
                                                          "FILE" if a.startswith(tmp) else a for a in argv[1:]]
            out["command"] = " ".join(shown)
            proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=args.duration * 4 + 120)
            row: dict[str, Any] = {"rc": proc.returncode}
            if csv_path.exists():
                with open(csv_path) as f:
                    rec = next(csv.DictReader(f), None)
                if rec:
                    us = lambda k: round(float(rec[k]) / 1000.0, 2) if rec.get(k) else None  # noqa: E731
                    row.update(throughput=float(rec.get("Inferences/Second", 0) or 0), p50_ms=us("p50 latency"),
                               p90_ms=us("p90 latency"), p95_ms=us("p95 latency"), p99_ms=us("p99 latency"))
            if proc.returncode != 0:
                row["tail"] = (proc.stdout + proc.stderr)[-600:]
            out["rates"][f"{rate:g}"] = row
            print(f"    perf_analyzer {rate:g}/s: {row}", flush=True)
    return out


# --- main ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="~4 s runs, no repeats, 10 %% bisection tolerance")
    ap.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    ap.add_argument("--models", nargs="+", choices=MODELS + ("slackfit",), default=list(MODELS) + ["slackfit"],
                    help="slackfit: superserve's SlackFit over every SubNet (superserve only)")
    ap.add_argument("--configs", nargs="+", default=None,
                    help="only these configs (clipper+ slackfit default fast_queue proxy direct_ingress "
                         "throughput_optimized)")
    ap.add_argument("--duration", type=float, default=None, help="seconds per run (default 15; --quick 4)")
    ap.add_argument("--repeats", type=int, default=None, help="confirming repeat runs (default 2; --quick 0)")
    ap.add_argument("--rel-tol", type=float, default=None, help="bisection tolerance (default 0.05; --quick 0.1)")
    ap.add_argument("--start-scale", type=float, default=1.0, help="scale the searches' starting rates")
    ap.add_argument("--min-rate", type=float, default=2.0)
    ap.add_argument("--max-rate", type=float, default=4000.0, help="the client's ceiling (one aiohttp loop)")
    ap.add_argument("--max-runs", type=int, default=30)
    ap.add_argument("--frontends", type=int, default=0,
                    help="also measure superserve with --frontends N (front-end processes; docs/frontdoor.md) "
                         "as configs clipper+_frontdoor / slackfit_frontdoor (default 0: not measured)")
    ap.add_argument("--no-perf-analyzer", action="store_true", help="skip Triton perf_analyzer's figures")
    ap.add_argument("--pa-rates", nargs="+", type=float, default=None,
                    help="perf_analyzer rates (default 0.5, 0.8, 1.0 x superserve's smallest max rate)")
    ap.add_argument("--contended", action="store_true", help="mark the results as from a busy machine")
    ap.add_argument("--out", type=Path, default=None, help="default results/peers.json (--quick: peers_quick.json)")
    args = ap.parse_args(argv)
    args.duration = args.duration or (4.0 if args.quick else 15.0)
    args.repeats = args.repeats if args.repeats is not None else (0 if args.quick else 2)
    args.rel_tol = args.rel_tol or (0.1 if args.quick else 0.05)
    out_path = args.out or RESULTS / ("peers_quick.json" if args.quick else "peers.json")

    # SIGTERM/SIGHUP end the run like Ctrl-C: the servers' context managers stop them.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)

    load0 = os.getloadavg()
    out: dict[str, Any] = json.loads(out_path.read_text()) if out_path.exists() else {}
    meta = {"command": "python -m benchmarks.peers " + " ".join(sys.argv[1:] if argv is None else argv),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "slo_ms": SLO_MS,
            "attainment_target": 0.999, "run_s": args.duration, "repeats": args.repeats, "rel_tol": args.rel_tol,
            "quick": args.quick, "cpus": os.cpu_count(), "loadavg_at_start": [round(x, 2) for x in load0],
            "contended": bool(args.contended or load0[0] >= 0.5),
            "subnets": {"smallest": subnet_id("smallest"), "largest": subnet_id("largest")},
            "client": "benchmarks/_peers_client.py (aiohttp, Poisson open loop, latency from scheduled send)"}
    imgs = images(64)
    failures: list[str] = []
    t_all = time.monotonic()
    try:
        # Model by model, every system for each: a drift in the machine's load over a long run
        # then lands on the systems compared with each other, not on one of them.
        for model in args.models:
            for system in args.systems:
                configs = [c for c in configs_of(system, model, args.frontends) if args.configs is None or c in args.configs]
                if not configs:
                    continue
                entry = out.setdefault(system, {}).get(model, {})
                entry = {"configs": dict(entry.get("configs", {}))}
                for config in configs:
                    print(f"[{time.monotonic() - t_all:6.0f} s] {system} / {model} / {config}", flush=True)
                    try:
                        entry["configs"][config] = measure(system, model, config, args, imgs)
                    except RuntimeError as exc:  # a server that would not start: note it, go on
                        print(f"  FAILED: {exc}", flush=True)
                        failures.append(f"{system}/{model}/{config}: {str(exc)[:300]}")
                        entry["configs"][config] = {"max_rate_at_999": 0.0, "p50_ms": None, "p99_ms": None,
                                                    "error": str(exc)[:2000]}
                if system == "superserve" and model in ("smallest", "largest"):
                    entry.update(raw_inference_rate(model))
                    entry["raw_inference_rate_measured"] = measured_raw_rate(model, 1.0 if args.quick else 3.0)
                out[system][model] = summarize(entry)
                add_ratios(out)
                out["_meta"] = {**meta, "elapsed_s": round(time.monotonic() - t_all), "failures": failures}
                out_path.parent.mkdir(parents=True, exist_ok=True)
                out_path.write_text(json.dumps(out, indent=1) + "\n")
        if "superserve" in args.systems and "smallest" in args.models and not args.no_perf_analyzer:
            print(f"[{time.monotonic() - t_all:6.0f} s] perf_analyzer / superserve / smallest", flush=True)
            top = out.get("superserve", {}).get("smallest", {}).get("max_rate_at_999") or 0
            rates = args.pa_rates or ([round(top * f) for f in (0.5, 0.8, 1.0)] if top else [200, 500, 800])
            try:
                out["_perf_analyzer"] = {"superserve": {"smallest": perf_analyzer_figures(rates, args, imgs)}}
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                out["_perf_analyzer"] = {"superserve": {"smallest": {"error": str(exc)[:1000]}}}
            out_path.write_text(json.dumps(out, indent=1) + "\n")
    except KeyboardInterrupt:
        print("interrupted; servers stopped; partial results kept in", out_path, flush=True)
        return 130
    print_table(out)
    for rate, row in out.get("_perf_analyzer", {}).get("superserve", {}).get("smallest", {}).get("rates", {}).items():
        print(f"perf_analyzer -> superserve smallest at {rate}/s: {row.get('throughput')} inf/s, "
              f"p50 {row.get('p50_ms')} ms, p99 {row.get('p99_ms')} ms (rc {row['rc']})")
    print(f"wrote {out_path} in {time.monotonic() - t_all:.0f} s", flush=True)
    return 1 if failures else 0


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def print_table(out: dict) -> None:
    print(f"\n{'system':<11} {'model':<9} {'req/s @0.999':>12} {'p50 ms':>8} {'p99 ms':>8}  config (others)")
    for system in SYSTEMS:
        for model, e in out.get(system, {}).items():
            others = ", ".join(f"{c} {v['max_rate_at_999']}" for c, v in e["configs"].items() if c != e["config"])
            extra = ""
            if "vs_best_peer" in e:
                extra += f"  vs best peer {e['vs_best_peer']}x"
            if "ratio_to_raw" in e:
                extra += f"  {e['ratio_to_raw']:.2f} of raw {e['raw_inference_rate']}/s"
            p50 = "-" if e["p50_ms"] is None else f"{e['p50_ms']:.2f}"
            p99 = "-" if e["p99_ms"] is None else f"{e['p99_ms']:.2f}"
            print(f"{system:<11} {model:<9} {e['max_rate_at_999']:>12} {p50:>8} {p99:>8}  {e['config']}"
                  + (f" ({others})" if others else "") + extra)


if __name__ == "__main__":
    sys.exit(main())
