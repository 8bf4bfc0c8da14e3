"""Worker failures, live: SIGKILL one worker at a fixed interval under a bursty trace; the
supervisor restarts it and re-admits it when warm. Same trace without kills for comparison.

Setup (stated in the JSON): `superserve serve` with ``--workers`` (default 2) SlackFit
workers on the bundle, the experiments' SLO rule, deadline shedding. The trace is the
paper's bursty shape (constant base stream + Gamma stream, CV^2 = 8, half each) with a mean
of ``--load`` (default 0.5) x the *measured* sustainable rate: the highest Poisson rate the
live server (all workers, router, client on this machine) answers >= 95 % in time, probed
at fractions of the profile's capacity (workers x 16 / batch-16 p50 of the most accurate
SubNet). So with one worker of two dead the remaining capacity is about the mean load and
bursts exceed it.

Kills: every ``--kill-every`` seconds (default 12, the paper's interval), SIGKILL to the next
worker slot in turn (skipped if that slot is not warm yet, counted). Per kill, from the
server's event log (CLOCK_MONOTONIC, the same clock as the killer): detection (kill -> death
seen by the router) and recovery (kill -> the replacement re-admitted warm).

``--standby N`` (default 1): N warm standby workers (``standby_workers``): a killed worker's
slot is refilled at once by a standby that already paid for spawn, torch import, weight load
and warm-up; a new standby warms up (nicer) in the background. ``--standby 0``: every
replacement is a cold restart. Where a worker's start-up goes (spawn, import, load, warm-up)
is reported from the workers' own timings (``startup_s``).

Keys: requests_sent, responses_received (must be equal: every request got an HTTP answer),
slo_attainment, slo_attainment_no_faults, recovery_ms_p50, detection_ms_p50, kills,
restarts, standby_promotions, startup_s, outcomes of both runs.

``--poison [N]`` runs the poison-input scenario instead (a few seconds; key ``poison`` of the
same JSON, the other keys kept): a Poisson stream at ``--rate`` (default 10 % of the profile's
capacity) and N (default 1) distinct inputs that crash the worker running them (the server's
``inject_crash_value`` test hook: a SIGSEGV in the worker, as a kernel bug would raise),
spread over the run, each sent by a client that retries a 503 up to twice. The router re-runs
a crashed batch one request at a time and answers an input whose workers died
``request_max_deaths`` (2) times with HTTP 500 (counted across the client's retries), so each
poison input costs two workers (refilled by the standby and a restart), not all of them.
Reported: every request answered once, each poison attempt's answer, worker deaths, and the
other requests' outcomes and SLO attainment.

Usage: python -m benchmarks.faults [--bundle DIR] [--seconds 60] [--kill-every 12] [--workers 2] [--standby 1]
       python -m benchmarks.faults --poison [N] [--seconds 6] [--rate RPS]
Writes benchmarks/results/faults.json.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import rel
from benchmarks._reliability import (RESULTS, ServerProcess, accounting, default_bundle, measure_sustainable, run_trace)
from superserve.scheduling.conventions import default_slo_ms
from superserve.scheduling.profile import LatencyProfile
from superserve.outcome import Outcome
from superserve.workload import bursty, poisson


class Killer(threading.Thread):
    """SIGKILL worker slots in turn every ``every_s`` seconds until stopped."""

    def __init__(self, srv: ServerProcess, every_s: float, first_s: float) -> None:
        super().__init__(daemon=True)
        self.srv, self.every_s, self.first_s = srv, every_s, first_s
        self.kills: list[dict[str, Any]] = []
        self.skipped = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        slot = 0
        n = len(self.srv.worker_pids)
        if self._stop_event.wait(self.first_s):
            return
        while True:
            if self._warm(slot):
                pid = self.srv.worker_pids[slot]
                t = time.monotonic()
                os.kill(pid, signal.SIGKILL)
                self.kills.append({"worker": slot, "pid": pid, "t": t})
            else:
                self.skipped += 1
            slot = (slot + 1) % n
            if self._stop_event.wait(self.every_s):
                return

    def _warm(self, slot: int) -> bool:
        """The slot's latest lifecycle event is 'ready' (or it never died)."""
        last = None
        for e in self.srv.events():
            if e.get("worker") == slot and e["event"] in ("worker_ready", "worker_died", "worker_restarted"):
                last = e["event"]
        return last in (None, "worker_ready")

    def stop(self) -> None:
        self._stop_event.set()


def recoveries(kills: list[dict[str, Any]], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for k in kills:
        died = next((e for e in events if e["event"] == "worker_died" and e.get("pid") == k["pid"]), None)
        ready = next((e for e in events if e["event"] == "worker_ready" and e.get("restarted")
                      and e["worker"] == k["worker"] and e["t"] > k["t"]), None)
        out.append({"worker": k["worker"], "detection_ms": round((died["t"] - k["t"]) * 1000, 2) if died else None,
                    "recovery_ms": round((ready["t"] - k["t"]) * 1000, 1) if ready else None,
                    "requeued_in_flight": died.get("in_flight") if died else None})
    return out


def _p50(values: list) -> float | None:
    v = [x for x in values if x is not None]
    return round(float(np.median(v)), 2) if v else None


def _startup_breakdown(events: list[dict[str, Any]]) -> dict[str, Any]:
    """p50 per phase over the worker start-ups the server timed (initial, standby, restarts)."""
    keys = ("spawn_s", "import_s", "load_s", "warm_up_s", "total_s")
    # A promoted standby's ready event carries its own (background) start-up: not a cold restart.
    promoted = {e.get("pid") for e in events if e["event"] == "worker_restarted" and e.get("standby")}
    out: dict[str, Any] = {}
    for kind, sel in (("initial", lambda e: e["event"] == "worker_ready" and not e.get("restarted")),
                      ("standby", lambda e: e["event"] == "standby_ready"),
                      ("cold_restart", lambda e: e["event"] == "worker_ready" and e.get("restarted")
                       and e.get("pid") not in promoted)):
        rows = [e.get("startup", e) for e in events if sel(e)]
        rows = [r for r in rows if r and "total_s" in r]
        if rows:
            out[kind] = {"n": len(rows), **{k: round(float(np.median([r[k] for r in rows])), 3) for k in keys}}
    return out


def faults_experiment(bundle: str, *, seconds: float, kill_every_s: float, workers: int, load: float,
                      margin_ms: float = 0.0, standby: int = 1, log=print) -> dict[str, Any]:
    profile = LatencyProfile.load(Path(bundle) / "profile.json")
    slo = default_slo_ms(profile)
    profile_capacity = workers * profile.max_batch / (profile.largest.latency_ms(profile.max_batch, "p50") / 1000)
    with ServerProcess(bundle=bundle, workers=workers, warmup_runs=1, restart_backoff_s=0.1,
                       standby_workers=standby) as srv:
        sustainable, probes = measure_sustainable(srv, profile_capacity, slo, margin_ms=margin_ms)
        mean = load * sustainable
        trace = bursty(mean / 2, mean / 2, 8.0, seconds, seed=7)
        log(f"SLO {slo:.1f} ms; profile capacity {profile_capacity:.0f} req/s; measured sustainable "
            f"{sustainable:.0f} req/s (probes {probes}); trace: bursty mean {mean:.0f} req/s, {len(trace)} requests "
            f"over {seconds:g} s")
        rec0, s0 = run_trace(srv, trace, slo_ms=slo, margin_ms=margin_ms)
        log(f"no faults: attainment {s0['slo_attainment']}, accuracy {s0['mean_accuracy']}")
        time.sleep(1.0)
        killer = Killer(srv, kill_every_s, first_s=min(kill_every_s, seconds / 4))
        killer.start()
        rec1, s1 = run_trace(srv, trace, slo_ms=slo, margin_ms=margin_ms)
        killer.stop()
        killer.join()
        time.sleep(0.5)
        # Recovery of the last kill may land after the trace: wait for it (bounded).
        end = time.monotonic() + 60
        while time.monotonic() < end and not all(r["recovery_ms"] for r in recoveries(killer.kills, srv.events())):
            time.sleep(0.2)
        events = srv.events()
        rec = recoveries(killer.kills, events)
        log(f"with kills: attainment {s1['slo_attainment']}, accuracy {s1['mean_accuracy']}, "
            f"{len(killer.kills)} kills, recovery p50 {_p50([r['recovery_ms'] for r in rec])} ms")
    acct = accounting(rec1)
    return {
        "config": {"bundle": rel(bundle), "workers": workers, "standby_workers": standby, "policy": "slackfit",
                   "late": "shed", "slo_ms": slo,
                   "restart_backoff_s": 0.1, "kill_every_s": kill_every_s, "signal": "SIGKILL",
                   "margin_ms": margin_ms},
        "profile_capacity_rps": round(profile_capacity, 1),
        "sustainable_rps": round(sustainable, 1),
        "sustainable_probes": {str(k): v for k, v in probes.items()},
        "trace": {"kind": "bursty", "mean_rps": round(mean, 1), "load_vs_sustainable": load, "cv2": 8.0,
                  "seconds": seconds, "requests": len(trace)},
        "requests_sent": acct["requests_sent"],
        "responses_received": acct["responses_received"],
        "slo_attainment": s1["slo_attainment"],
        "slo_attainment_no_faults": s0["slo_attainment"],
        "mean_accuracy": s1["mean_accuracy"],
        "mean_accuracy_no_faults": s0["mean_accuracy"],
        "recovery_ms_p50": _p50([r["recovery_ms"] for r in rec]),
        "detection_ms_p50": _p50([r["detection_ms"] for r in rec]),
        "kills": len(killer.kills),
        "kills_skipped_not_warm": killer.skipped,
        "restarts": sum(1 for e in events if e["event"] == "worker_restarted"),
        "standby_promotions": sum(1 for e in events if e["event"] == "worker_restarted" and e.get("standby")),
        "startup_s": _startup_breakdown(events),
        "given_up": sum(1 for e in events if e["event"] == "worker_given_up"),
        "per_kill": rec,
        "outcomes": s1["counts"],
        "outcomes_no_faults": s0["counts"],
        "no_faults_requests_sent": len(rec0),
        "no_faults_responses_received": accounting(rec0)["responses_received"],
        "server_exit_code": srv.proc.returncode,
    }


# --- a poison input ------------------------------------------------------------------------------
POISON_VALUE = 1234.5  # ServeConfig.inject_crash_value: an input whose first value is this crashes its worker


class Poisoner(threading.Thread):
    """POST one poison input at each of ``at_s`` (seconds after start), as a client that
    retries a 503 ("retry") up to ``retries`` times; keep every attempt's answer."""

    def __init__(self, srv: ServerProcess, at_s: list[float], slo_ms: float, retries: int = 2) -> None:
        super().__init__(daemon=True)
        self.srv, self.at_s, self.slo_ms, self.retries = srv, at_s, slo_ms, retries
        self.answers: list[dict[str, Any]] = []

    def body(self, i: int) -> bytes:
        """Poison input ``i``: crashes its worker, and differs from the others (a new input)."""
        data = [POISON_VALUE, float(i)] + [0.0] * 782
        return json.dumps({"id": f"poison-{i}", "inputs": [{"name": "input", "datatype": "FP32",
                                                             "shape": [1, 784], "data": data}],
                           "parameters": {"slo_ms": self.slo_ms}}).encode()

    def send(self, body: bytes) -> dict[str, Any]:
        req = urllib.request.Request(self.srv.http_url + "/v2/models/supernet/infer", data=body, method="POST",
                                     headers={"Content-Type": "application/json", **self.srv.auth_headers})
        t = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        except OSError as e:
            status, text = 0, f"no answer: {e}"
        try:
            error = json.loads(text).get("error")
        except ValueError:
            error = text[:200]
        return {"status": status, "error": error, "latency_ms": round((time.monotonic() - t) * 1000.0, 1)}

    def run(self) -> None:
        t0 = time.monotonic()
        for i, at in enumerate(self.at_s):
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            attempts = [self.send(self.body(i))]
            while attempts[-1]["status"] == 503 and len(attempts) <= self.retries:
                time.sleep(0.1)
                attempts.append(self.send(self.body(i)))
            self.answers.append({"at_s": at, "final_status": attempts[-1]["status"],
                                 "final_error": attempts[-1]["error"], "attempts": attempts})


def _attainment(rec, lo: float | None = None, hi: float | None = None) -> float | None:
    """In-time fraction of the requests scheduled in [lo, hi) seconds into the replay."""
    t = rec.scheduled_s - rec.scheduled_s[0]
    sel = np.ones(len(t), bool) if lo is None else t >= lo
    if hi is not None:
        sel &= t < hi
    return round(float(np.mean(rec.outcome[sel] == Outcome.IN_TIME)), 4) if sel.any() else None


def _health(srv: ServerProcess, path: str) -> int:
    try:
        with urllib.request.urlopen(srv.http_url + path, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def poison_experiment(bundle: str, *, seconds: float, workers: int, standby: int, poisons: int,
                      rate: float | None = None, margin_ms: float = 0.0, log=print) -> dict[str, Any]:
    profile = LatencyProfile.load(Path(bundle) / "profile.json")
    slo = default_slo_ms(profile)
    profile_capacity = workers * profile.max_batch / (profile.largest.latency_ms(profile.max_batch, "p50") / 1000)
    rate = rate if rate is not None else 0.1 * profile_capacity
    trace = poisson(rate, seconds, seed=11)
    at_s = [round(seconds * (i + 1) / (poisons + 1), 3) for i in range(poisons)]
    with ServerProcess(bundle=bundle, workers=workers, warmup_runs=1, restart_backoff_s=0.1,
                       standby_workers=standby, inject_crash_value=POISON_VALUE) as srv:
        end = time.monotonic() + 120  # the standbys warm up after the serving workers
        while sum(e["event"] == "standby_ready" for e in srv.events()) < standby and time.monotonic() < end:
            time.sleep(0.2)
        log(f"SLO {slo:.1f} ms; Poisson {rate:.0f} req/s for {seconds:g} s ({len(trace)} requests), "
            f"{poisons} poison input(s) at {at_s} s; {workers} workers + {standby} standby")
        poisoner = Poisoner(srv, at_s, slo)
        poisoner.start()
        rec, summary = run_trace(srv, trace, slo_ms=slo, margin_ms=margin_ms)
        poisoner.join(60)
        time.sleep(0.5)
        events = srv.events()
        ready_after, live_after = _health(srv, "/v2/health/ready"), _health(srv, "/v2/health/live")
    acct = accounting(rec)
    answers = poisoner.answers
    deaths = [e for e in events if e["event"] == "worker_died"]
    res = {
        "config": {"bundle": rel(bundle), "workers": workers, "standby_workers": standby, "policy": "slackfit",
                   "late": "shed", "slo_ms": slo, "request_max_deaths": 2, "restart_backoff_s": 0.1,
                   "poison": "inject_crash_value: the worker SIGSEGVs on an input whose first value is "
                             f"{POISON_VALUE}"},
        "trace": {"kind": "poisson", "rps": round(rate, 1), "seconds": seconds, "requests": len(trace),
                  "rate_vs_profile_capacity": round(rate / profile_capacity, 3)},
        "poison_inputs": poisons,
        "poison_answers": answers,
        "poison_all_answered_500": len(answers) == poisons and all(
            a["final_status"] == 500 and "not run again" in (a["final_error"] or "") for a in answers),
        "poison_attempts": sum(len(a["attempts"]) for a in answers),
        "worker_deaths": len(deaths),
        "worker_deaths_per_poison": round(len(deaths) / poisons, 2) if poisons else None,
        "poison_request_events": sum(e["event"] == "poison_request" for e in events),
        "standby_promotions": sum(1 for e in events if e["event"] == "worker_restarted" and e.get("standby")),
        "given_up": sum(1 for e in events if e["event"] == "worker_given_up"),
        "requests_sent": acct["requests_sent"],
        "responses_received": acct["responses_received"],
        "http_errors": acct["http_errors"],  # other requests answered 5xx other than 503/504: must be 0
        "slo_attainment": summary["slo_attainment"],
        # Split at the first poison input (send times on the replay's clock, which starts within
        # a few ms of the poisoner's): what two worker deaths and the restarts behind them cost.
        "slo_attainment_before_first_poison": _attainment(rec, hi=at_s[0] if at_s else None),
        "slo_attainment_from_first_poison": _attainment(rec, lo=at_s[0]) if at_s else None,
        "mean_accuracy": summary["mean_accuracy"],
        "outcomes": summary["counts"],
        "ready_after": ready_after,
        "live_after": live_after,
        "server_exit_code": srv.proc.returncode,
    }
    log(f"poison answers {[[(t['status'], t['latency_ms']) for t in a['attempts']] for a in answers]}; "
        f"{len(deaths)} worker deaths; "
        f"others: {acct['responses_received']}/{acct['requests_sent']} answered, attainment "
        f"{summary['slo_attainment']}, outcomes {summary['counts']}")
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", default=default_bundle())
    p.add_argument("--seconds", type=float, default=None, help="trace length (default 60; --poison: 6)")
    p.add_argument("--kill-every", type=float, default=12.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--load", type=float, default=0.5, help="trace mean as a fraction of the measured sustainable rate")
    p.add_argument("--margin-ms", type=float, default=0.0,
                   help="send slo_ms minus this to the server (room for the HTTP path); attainment still vs slo_ms")
    p.add_argument("--standby", type=int, default=1, help="warm standby workers (0: cold restarts only)")
    p.add_argument("--poison", type=int, nargs="?", const=1, default=0, metavar="N",
                   help="run the poison-input scenario instead: N (default 1) inputs that crash their worker")
    p.add_argument("--rate", type=float, default=None,
                   help="poison scenario: Poisson rate (default 10%% of the profile's capacity)")
    p.add_argument("--out", type=Path, default=RESULTS / "faults.json")
    args = p.parse_args()
    if args.poison:
        seconds = args.seconds if args.seconds is not None else 6.0
        res = poison_experiment(args.bundle, seconds=seconds, workers=args.workers, standby=args.standby,
                                poisons=args.poison, rate=args.rate, margin_ms=args.margin_ms)
        res["command"] = (f"python -m benchmarks.faults --poison {args.poison} --bundle {rel(args.bundle)} "
                          f"--seconds {seconds:g} --workers {args.workers} --standby {args.standby}"
                          + (f" --rate {args.rate:g}" if args.rate is not None else ""))
        out = json.loads(args.out.read_text()) if args.out.exists() else {}
        out["poison"] = res  # the kill scenario's keys stay as they were
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1))
        print(json.dumps({k: res[k] for k in ("requests_sent", "responses_received", "poison_answers",
                                              "poison_all_answered_500", "worker_deaths", "slo_attainment",
                                              "outcomes", "ready_after", "live_after")}, indent=1))
        print(f"wrote {args.out} (key 'poison')")
        return
    args.seconds = args.seconds if args.seconds is not None else 60.0
    res = faults_experiment(args.bundle, seconds=args.seconds, kill_every_s=args.kill_every, workers=args.workers,
                            load=args.load, margin_ms=args.margin_ms, standby=args.standby)
    res["command"] = (f"python -m benchmarks.faults --bundle {rel(args.bundle)} --seconds {args.seconds:g} "
                      f"--kill-every {args.kill_every:g} --workers {args.workers} --load {args.load:g} "
                      f"--margin-ms {args.margin_ms:g} --standby {args.standby}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(json.dumps({k: res[k] for k in ("requests_sent", "responses_received", "slo_attainment",
                                          "slo_attainment_no_faults", "recovery_ms_p50", "detection_ms_p50",
                                          "kills", "restarts", "standby_promotions", "startup_s")}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
