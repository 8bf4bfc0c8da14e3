"""End to end, a second server (2 workers, queue of 4, late requests served): overload
answers 429, a killed worker's requests are re-run or answered, SIGTERM drains and exits 0."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import aiohttp
import numpy as np
import pytest

from superserve.embedded import EMBEDDED_DIR
from superserve.serving import ServerProcess

BUNDLE = os.environ.get("SUPERSERVE_BUNDLE", str(EMBEDDED_DIR))
URL = "/v2/models/supernet/infer"


@pytest.fixture(scope="module")
def server():
    # restart=False: these cases are about the router with the workers it has left (the
    # supervisor's restarts are covered by tests/test_reliability_supervisor.py).
    srv = ServerProcess(bundle=BUNDLE, workers=2, queue_capacity=4, late="serve", warmup_runs=1,
                        hang_timeout_s=0.5, restart=False).start()
    yield srv
    srv.stop()


def body(slo_ms: float) -> bytes:
    return json.dumps({"inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 784],
                                   "data": [128] * 784}], "parameters": {"slo_ms": slo_ms}}).encode()


async def burst(url: str, n: int, slo_ms: float, *, during=None) -> list[tuple[int, dict]]:
    """n concurrent requests; ``during`` (a coroutine function) runs while they are in flight."""
    async with aiohttp.ClientSession() as s:
        async def one():
            async with s.post(url, data=body(slo_ms), headers={"Content-Type": "application/json"}) as r:
                return r.status, json.loads(await r.read())
        tasks = [asyncio.ensure_future(one()) for _ in range(n)]
        if during is not None:
            await during()
        return await asyncio.gather(*tasks)


def test_overload_gets_429_and_every_request_an_answer(server):
    results = asyncio.run(burst(server.http_url + URL, 60, 5000))
    statuses = [s for s, _ in results]
    assert set(statuses) <= {200, 429}
    assert statuses.count(429) > 0 and statuses.count(200) >= 4
    rejected = next(b for s, b in results if s == 429)
    assert rejected["outcome"] == "rejected" and "queue full" in rejected["error"]


def test_late_mode_serves_an_impossible_deadline_late(server):
    status, answer = asyncio.run(burst(server.http_url + URL, 1, 0.01))[0]
    assert status == 200 and answer["parameters"]["outcome"] == "late"


def test_killed_worker_loses_no_request(server):
    async def kill_one():
        await asyncio.sleep(0.01)
        os.kill(server.worker_pids[0], signal.SIGKILL)
    results = asyncio.run(burst(server.http_url + URL, 4, 5000, during=kill_one))
    # Queue of 4: everything was admitted; each request was answered (re-run or 503), none hangs.
    assert all(s in (200, 503) for s, _ in results), results
    assert sum(s == 200 for s, _ in results) >= 1
    time.sleep(0.05)
    status, answer = asyncio.run(burst(server.http_url + URL, 1, 5000))[0]
    assert status == 200 and answer["parameters"]["worker"] == 1  # the survivor serves
    async def metrics():
        async with aiohttp.ClientSession() as s:
            async with s.get(server.http_url + "/metrics") as r:
                return await r.text()
    text = asyncio.run(metrics())
    assert "superserve_worker_deaths_total 1.0" in text
    assert 'superserve_workers{state="ready"} 1.0' in text


def test_hung_last_worker_is_killed_and_requests_answered(server):
    os.kill(server.worker_pids[1], signal.SIGSTOP)  # hangs: alive, never answers
    t0 = time.monotonic()
    results = asyncio.run(burst(server.http_url + URL, 3, 60_000))
    assert time.monotonic() - t0 < 5  # the watchdog (0.5 s here), not the 60 s deadline
    assert [s for s, _ in results] == [503] * 3  # no worker left to re-run them
    assert "died" in results[0][1]["error"] or "no live worker" in results[0][1]["error"]
    ready = asyncio.run(burst(server.http_url + URL, 1, 100))[0]
    assert ready[0] == 503


def test_sigterm_drains_and_exits_zero(server):
    async def terminate():
        await asyncio.sleep(0.005)
        server.proc.send_signal(signal.SIGTERM)
    try:
        results = asyncio.run(burst(server.http_url + URL, 4, 5000, during=terminate))
        assert all(s in (200, 503) for s, _ in results)
    except aiohttp.ClientConnectionError:
        pass  # a request that arrived after the listener closed; the rest were answered
    assert server.proc.wait(20) == 0
