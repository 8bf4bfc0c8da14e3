"""Scaling the local backend while serving: POST /v2/admin/workers adds worker processes
(used as soon as they are warm) and removes them (their batches finish first); every request
sent meanwhile gets one answer. (The Ray backend's: tests/test_ray_backend.py.)"""
from __future__ import annotations

import asyncio
import json

import aiohttp
import numpy as np

from superserve.embedded import EMBEDDED_DIR
from superserve.serving import ServerProcess

URL = "/v2/models/supernet/infer"
SUBNETS = ["w025-d111-e25.25.25", "w100-d444-e75757575.75757575.75757575"]


async def _admin(s: aiohttp.ClientSession, base: str, body: object) -> tuple[int, dict]:
    async with s.post(base + "/v2/admin/workers", data=json.dumps(body).encode()) as r:
        return r.status, json.loads(await r.read())


async def _run(base: str) -> tuple[list[tuple[int, dict]], dict]:
    rng = np.random.default_rng(1)
    seen: dict = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        async def one() -> tuple[int, dict]:
            body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28],
                                           "data": rng.standard_normal(784).tolist()}],
                               "parameters": {"slo_ms": 2000}}).encode()
            try:
                async with s.post(base + URL, data=body) as r:
                    return r.status, json.loads(await r.read())
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                return -1, {"error": repr(exc)}

        async def scale() -> None:
            await asyncio.sleep(0.3)
            seen["up"] = await _admin(s, base, {"count": 2})
            await asyncio.sleep(1.0)
            seen["down"] = await _admin(s, base, {"count": 1})
            await asyncio.sleep(0.5)
        # Requests at 40/s from before the change until after it, however long warming takes.
        scaling = asyncio.ensure_future(scale())
        tasks = []
        while not scaling.done():
            tasks.append(asyncio.ensure_future(one()))
            await asyncio.sleep(1 / 40.0)
        await scaling
        return await asyncio.gather(*tasks), seen


def test_local_workers_added_and_removed_while_serving():
    with ServerProcess(bundle=EMBEDDED_DIR, subnets=SUBNETS, workers=1, warmup_runs=1, calibration_check_s=0,
                       grpc_port=None, late="serve") as srv:
        results, seen = asyncio.run(_run(srv.http_url))
        status, up = seen["up"]
        assert status == 200 and up["workers"] == 2 and up["ready"] == 2 and up["backend"] == "local", up
        status, down = seen["down"]
        assert status == 200 and down["workers"] == 1, down
        assert len(results) >= 100 and all(s == 200 for s, _ in results), {s for s, _ in results}
        assert {b["parameters"]["worker"] for _, b in results} == {0, 1}  # the added worker served
        events = [e["event"] for e in srv.events()]
        assert "workers_scaled" in events and "worker_died" not in events
