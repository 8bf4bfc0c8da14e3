"""The supervisor: restart with exponential back-off, re-admission only when warm, give up
after too many deaths in a window. First against a fake pool with a fake clock (exact),
then end to end: kill -9 a real worker under load, time its detection and its recovery."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import aiohttp
import pytest

from superserve.embedded import EMBEDDED_DIR
from superserve.serving import ServerProcess
from superserve.serving.events import EventLog
from superserve.serving.pool import WorkerState
from superserve.outcome import Outcome
from superserve.serving.supervisor import RestartPolicy, Supervisor

BUNDLE = os.environ.get("SUPERSERVE_BUNDLE", str(EMBEDDED_DIR))
ROW = bytes(4 * 784)


# --- the back-off rule --------------------------------------------------------------------
def test_backoff_doubles_is_capped_and_gives_up():
    p = RestartPolicy(backoff_s=0.1, backoff_factor=2, backoff_max_s=0.5, max_deaths=6)
    assert [p.delay(n) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.5, 0.5, None]
    assert RestartPolicy(enabled=False).delay(1) is None
    with pytest.raises(ValueError):
        RestartPolicy(max_deaths=0)


# --- supervisor + router + fake pool (tests/conftest.py) -----------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(fake_router, workers=2, **policy):
    router, pool = fake_router(workers, warm=False)
    metrics, loop = router.metrics, asyncio.get_running_loop()
    clock = Clock()
    sup = Supervisor(router, pool, RestartPolicy(**{"backoff_s": 0.01, **policy}), metrics, EventLog(None, None),
                     loop, clock)
    for w in pool.workers:
        w.state = WorkerState.IDLE
        sup.worker_ready(w)
    router.accepting = True
    sup.arm()
    return router, sup, pool, metrics, clock


def kill(sup, pool, i: int) -> None:
    w = pool.workers[i]
    w.state = WorkerState.DEAD
    sup.worker_died(w)


def count(metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


def test_dead_worker_is_restarted_after_backoff_and_readmitted_only_when_warm(fake_router):
    async def main():
        router, sup, pool, metrics, clock = make(fake_router)
        kill(sup, pool, 0)
        assert router.ready and len(router._ready) == 1  # the policy has one worker at once
        assert pool.spawned == []  # back-off first
        await asyncio.sleep(0.05)
        assert pool.spawned == [0] and count(metrics, "superserve_worker_restarts_total") == 1
        assert pool.workers[0] not in router._ready  # starting: not dispatched to
        clock.now += 2.5
        w = pool.workers[0]
        w.state = WorkerState.IDLE
        sup.worker_ready(w)  # warm: re-admitted
        assert w in router._ready
        assert count(metrics, "superserve_worker_recovery_seconds_sum") == pytest.approx(2.5)
    asyncio.run(main())


def test_a_worker_that_keeps_dying_is_given_up(fake_router):
    async def main():
        router, sup, pool, metrics, clock = make(fake_router, max_deaths=3, window_s=60, backoff_max_s=0.02)
        for _ in range(2):
            kill(sup, pool, 0)
            await asyncio.sleep(0.05)  # restarted, dies again while warming
            clock.now += 1
        kill(sup, pool, 0)  # third death within 60 s
        await asyncio.sleep(0.05)
        assert pool.spawned == [0, 0]
        assert sup.given_up == {0} and count(metrics, "superserve_worker_give_ups_total") == 1
        assert count(metrics, "superserve_worker_deaths_total") == 3
        r = await asyncio.wait_for(_serve_one(router, pool), 1)  # the other worker still serves
        assert r.outcome is Outcome.IN_TIME
    asyncio.run(main())


async def _serve_one(router, pool):
    task = asyncio.ensure_future(router.infer(ROW, 1000.0))
    for _ in range(3):
        await asyncio.sleep(0)
    w = next(w for w in pool.workers if router.in_flight(w) is not None)
    w.state = WorkerState.IDLE
    from superserve.serving.messages import BatchDone
    router.batch_done(w, BatchDone(router.in_flight(w).seq, 1.0))
    return await task


def test_deaths_outside_the_window_are_forgotten(fake_router):
    async def main():
        router, sup, pool, metrics, clock = make(fake_router, max_deaths=2, window_s=10)
        for _ in range(4):
            kill(sup, pool, 0)
            await asyncio.sleep(0.03)
            clock.now += 11  # each death is alone in its window
        assert pool.spawned == [0] * 4 and not sup.given_up
    asyncio.run(main())


def test_no_restart_during_startup_or_after_stop(fake_router):
    async def main():
        router, sup, pool, metrics, clock = make(fake_router)
        sup.stop()
        kill(sup, pool, 0)
        await asyncio.sleep(0.05)
        assert pool.spawned == []
        sup.arm()
        kill(sup, pool, 1)
        sup.stop()  # shutdown while the restart is pending
        await asyncio.sleep(0.05)
        assert pool.spawned == []
    asyncio.run(main())


def test_a_given_up_slot_is_tried_again_after_its_cooldown(fake_router):
    """Before: a slot that died max_deaths times within the window was abandoned for good;
    with every slot abandoned the server answered 503 forever."""
    async def main():
        router, sup, pool, metrics, clock = make(fake_router, workers=1, max_deaths=2, window_s=60, backoff_max_s=0.02,
                                                 cooldown_s=0.1)
        kill(sup, pool, 0)
        await asyncio.sleep(0.05)
        kill(sup, pool, 0)  # second death within the window: given up ...
        assert sup.given_up == {0} and not router.ready
        assert sup.can_recover()  # ... for the cool-down only
        await asyncio.sleep(0.2)
        assert pool.spawned == [0, 0] and not sup.given_up  # tried again, with a fresh window
        w = pool.workers[0]
        w.state = WorkerState.IDLE
        sup.worker_ready(w)
        assert router.ready
        kill(sup, pool, 0)  # the old deaths no longer count: restarted after back-off
        await asyncio.sleep(0.05)
        assert pool.spawned == [0, 0, 0] and not sup.given_up
    asyncio.run(main())


def test_liveness_fails_once_no_worker_can_come_back(fake_router):
    """Before: /v2/health/live said 200 while every slot was abandoned, so no orchestrator
    ever restarted the server. Now live fails when no worker is alive and none will be."""
    from superserve.serving.rest import RestApi

    async def main():
        router, sup, pool, metrics, clock = make(fake_router, workers=2, max_deaths=1, cooldown_s=None)
        rest = RestApi(router.info, router, None, metrics, 1 << 20, live=sup.can_recover)
        assert (await rest.live(None)).status == 200
        kill(sup, pool, 0)  # given up for good (no cool-down); the other still serves
        assert sup.given_up == {0} and (await rest.live(None)).status == 200
        kill(sup, pool, 1)
        resp = await rest.live(None)
        assert resp.status == 503 and b"restart the server" in resp.body
        # With restarts on and a cool-down, the same deaths leave the server live.
        router, sup, pool, metrics, clock = make(fake_router, workers=1, max_deaths=1, cooldown_s=30)
        kill(sup, pool, 0)
        assert not router.ready and sup.can_recover()
        sup.stop()
    asyncio.run(main())


# --- a restarted worker's priority ----------------------------------------------------------------
PRIORITY_PROBE = """
import os, threading, time
from superserve.serving.worker import WarmupPriority
p = WarmupPriority(10)
p.enter()
during = os.getpriority(os.PRIO_PROCESS, 0)
t = threading.Thread(target=time.sleep, args=(1,), daemon=True)  # born nicer, like torch's threads
t.start()
p.leave()
print(during, os.getpriority(os.PRIO_PROCESS, 0), os.getpriority(os.PRIO_PROCESS, t.native_id))
"""


def _priority_probe(prefix: list[str]) -> list[int]:
    import subprocess
    import sys

    out = subprocess.run(prefix + [sys.executable, "-c", PRIORITY_PROBE], capture_output=True, text=True,
                         check=True, timeout=60)
    return [int(x) for x in out.stdout.split()]


def test_a_restarted_worker_serves_at_its_siblings_priority_even_unprivileged():
    """Before: a restarted worker warmed up at nice +10 and, unprivileged, could not come
    back: it served nicer (slower under contention) than its siblings for good. Now it warms
    up nicer only where it can return, and every thread returns."""
    import shutil

    from superserve.serving.worker import can_restore_priority

    base = os.getpriority(os.PRIO_PROCESS, 0)
    if can_restore_priority(base):
        assert _priority_probe([]) == [min(19, base + 10), base, base]
    if os.geteuid() == 0 or can_restore_priority(base):
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("needs setpriv to drop CAP_SYS_NICE")
        # No CAP_SYS_NICE and RLIMIT_NICE 0: an ordinary user's worker.
        prefix = [setpriv, "--bounding-set", "-sys_nice", "--inh-caps", "-sys_nice"]
        if shutil.which("prlimit"):
            prefix = [shutil.which("prlimit"), "--nice=0"] + prefix
    else:
        prefix = []
    assert _priority_probe(prefix) == [base, base, base]


# --- end to end: kill -9 under load ----------------------------------------------------------
def infer_body() -> bytes:
    return json.dumps({"inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 784],
                                   "data": [100] * 784}], "parameters": {"slo_ms": 2000},
                       "outputs": [{"name": "class_index"}]}).encode()


async def steady_load(url: str, until: float, rate: float = 150.0) -> list[tuple[int, int]]:
    """Open-loop requests at ``rate``/s until ``until`` (monotonic); (status, worker) each."""
    body = infer_body()
    results: list[tuple[int, int]] = []
    async with aiohttp.ClientSession() as s:
        async def one():
            async with s.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                data = json.loads(await r.read())
                results.append((r.status, int(data.get("parameters", {}).get("worker", -1))))
        tasks = []
        while time.monotonic() < until and len(tasks) < 20_000:
            tasks.append(asyncio.ensure_future(one()))
            await asyncio.sleep(1.0 / rate)
        await asyncio.gather(*tasks)
    return results


def wait_for_event(srv, pred, timeout_s: float) -> dict:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        for e in srv.events():
            if pred(e):
                return e
        time.sleep(0.02)
    raise AssertionError(f"event not seen in {timeout_s} s; events: {srv.events()}\n{srv.log_tail()}")


def metric(srv, name: str) -> float:
    import urllib.request
    text = urllib.request.urlopen(srv.http_url + "/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def test_killed_worker_is_detected_fast_restarted_readmitted_then_given_up():
    with ServerProcess(bundle=BUNDLE, workers=2, warmup_runs=1, restart_backoff_s=0.05,
                       restart_max_deaths=2, restart_window_s=600) as srv:
        url = srv.http_url + "/v2/models/supernet/infer"
        old_pid = srv.worker_pids[0]

        async def kill_during_load():
            load = asyncio.ensure_future(steady_load(url, time.monotonic() + 1.5))
            await asyncio.sleep(0.5)
            t_kill = time.monotonic()
            os.kill(old_pid, signal.SIGKILL)
            return t_kill, await load
        t_kill, results = asyncio.run(kill_during_load())
        # Every request answered: re-run on the survivor or (deadline gone) 503; none lost.
        assert all(s in (200, 503) for s, _ in results) and sum(s == 200 for s, _ in results) > 0.9 * len(results)
        died = wait_for_event(srv, lambda e: e["event"] == "worker_died", 5)
        detect_ms = (died["t"] - t_kill) * 1000
        assert died["exitcode"] == -9 and detect_ms < 250, detect_ms  # ms, not a timeout (loaded box)
        ready = wait_for_event(srv, lambda e: e["event"] == "worker_ready" and e.get("restarted"), 120)
        assert ready["pid"] != old_pid and srv.worker_pids[0] == ready["pid"]
        if os.geteuid() == 0:  # warmed up nicer, then back to its siblings' priority
            import psutil
            assert psutil.Process(ready["pid"]).nice() == psutil.Process(srv.worker_pids[1]).nice()
        assert metric(srv, "superserve_worker_restarts_total") == 1
        assert metric(srv, 'superserve_workers{state="ready"}') == 2
        # The replacement serves: send until worker 0 answers.
        seen = asyncio.run(steady_load(url, time.monotonic() + 1.0, rate=100))
        assert any(w == 0 for s, w in seen if s == 200)
        print(f"\ndetection {detect_ms:.1f} ms; recovery (kill -> re-admitted warm) "
              f"{(ready['t'] - t_kill) * 1000:.0f} ms")
        # Second death within the window: given up, the other worker carries on.
        os.kill(ready["pid"], signal.SIGKILL)
        wait_for_event(srv, lambda e: e["event"] == "worker_given_up", 5)
        assert metric(srv, "superserve_worker_give_ups_total") == 1
        time.sleep(0.3)
        assert metric(srv, "superserve_worker_restarts_total") == 1  # not restarted again
        after = asyncio.run(steady_load(url, time.monotonic() + 0.5, rate=50))
        assert after and all(s == 200 and w == 1 for s, w in after)
    assert srv.proc.returncode == 0


def test_warm_standby_takes_a_dead_workers_slot_at_once_and_is_replaced():
    """With a standby worker (loaded and warmed, not serving), a killed worker's slot is
    refilled by the standby the moment the death is seen, every request under load is
    answered, and a new standby warms up in the background."""
    with ServerProcess(bundle=BUNDLE, workers=1, standby_workers=1, warmup_runs=1,
                       restart_max_deaths=5, restart_window_s=600) as srv:
        url = srv.http_url + "/v2/models/supernet/infer"
        standby = wait_for_event(srv, lambda e: e["event"] == "standby_ready", 120)
        old_pid = srv.worker_pids[0]
        assert standby["pid"] != old_pid

        async def kill_during_load():
            load = asyncio.ensure_future(steady_load(url, time.monotonic() + 1.5))
            await asyncio.sleep(0.5)
            os.kill(old_pid, signal.SIGKILL)
            return await load
        results = asyncio.run(kill_during_load())
        # One worker only, yet its in-flight batch and the queue went on to the standby.
        assert all(s in (200, 503) for s, _ in results) and sum(s == 200 for s, _ in results) > 0.9 * len(results)
        ready = wait_for_event(srv, lambda e: e["event"] == "worker_ready" and e.get("restarted"), 5)
        died = wait_for_event(srv, lambda e: e["event"] == "worker_died", 5)
        assert ready["pid"] == standby["pid"] == srv.worker_pids[0]
        assert ready["t"] - died["t"] < 0.5  # promoted, not spawned: no import, load or warm-up
        assert metric(srv, 'superserve_workers{state="ready"}') == 1
        seen = asyncio.run(steady_load(url, time.monotonic() + 0.5, rate=100))
        assert seen and all(s == 200 for s, _ in seen)
        # A new standby warms up in the background and takes the next death too.
        second = wait_for_event(srv, lambda e: e["event"] == "standby_ready" and e["pid"] != standby["pid"], 120)
        os.kill(standby["pid"], signal.SIGKILL)
        wait_for_event(srv, lambda e: e["event"] == "worker_ready" and e.get("pid") == second["pid"], 5)
        assert metric(srv, "superserve_worker_restarts_total") == 2
    assert srv.proc.returncode == 0


def test_a_poison_input_costs_two_workers_and_one_clear_error_not_the_server():
    """A real worker crash (the test hook makes an input whose first value is 1234.5 kill its
    worker, as a kernel bug would). Before: its batch was re-queued again and again, killing
    every worker in turn. Now: it crashes two workers, is answered 500 naming the cause, the
    log names the request, every other request gets one answer, and the workers come back."""
    poison = json.dumps({"id": "bad-one", "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784],
                                                        "data": [1234.5] + [0.0] * 783}],
                         "parameters": {"slo_ms": 5000}}).encode()
    with ServerProcess(bundle=BUNDLE, workers=2, warmup_runs=1, restart_backoff_s=0.05,
                       inject_crash_value=1234.5) as srv:
        url = srv.http_url + "/v2/models/supernet/infer"

        async def poison_under_load():
            load = asyncio.ensure_future(steady_load(url, time.monotonic() + 1.0, rate=50))
            await asyncio.sleep(0.2)
            async with aiohttp.ClientSession() as s:
                async with s.post(url, data=poison, headers={"Content-Type": "application/json"}) as r:
                    answer = (r.status, json.loads(await r.read()))
            return answer, await load
        (status, body), others = asyncio.run(poison_under_load())
        assert status == 500 and "worker died twice running this request" in body["error"], body
        assert others and all(s in (200, 503) for s, _ in others)  # each answered, none lost
        event = wait_for_event(srv, lambda e: e["event"] == "poison_request", 5)
        assert event["id"] == "bad-one" and event["shape"] == [1, 784] and event["deaths"] == 2
        assert [e["exitcode"] for e in srv.events() if e["event"] == "worker_died"] == [-11, -11]  # SIGSEGV
        assert metric(srv, "superserve_poison_requests_total") == 1
        # Both slots are restarting (re-admission when warm: the kill test above); the poison
        # is not run again, so no third worker dies.
        assert {e["worker"] for e in srv.events() if e["event"] == "worker_restart_scheduled"} == {0, 1}
        time.sleep(0.5)
        assert len([e for e in srv.events() if e["event"] == "worker_died"]) == 2
    assert srv.proc.returncode == 0
