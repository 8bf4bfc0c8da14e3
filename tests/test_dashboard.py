"""The dashboard's server side without processes: the router's activity rings (a fake pool,
every event by hand) and the HTTP endpoints (an in-process aiohttp client), auth included.
The page itself runs in a real browser in tests/test_dashboard_browser.py."""
from __future__ import annotations

import asyncio
import json
import re
from importlib import resources

from aiohttp.test_utils import TestClient, TestServer

from superserve.serving.activity import BATCH_FIELDS, SECOND_FIELDS, ActivityLog, Estimate, Totals
from superserve.serving.auth import BearerAuth
from superserve.serving.codec import InputCodec
from superserve.serving.config import ServeConfig
from superserve.serving.dashboard import BATCH_WIRE_FIELDS
from superserve.serving.messages import BatchDone
from superserve.serving.pool import WorkerState
from superserve.serving.rest import RestApi

ROW = bytes(4 * 784)
B = {name: i for i, name in enumerate(BATCH_FIELDS)}
S = {name: i for i, name in enumerate(SECOND_FIELDS)}


def finish(router, pool, w_index: int, compute_ms: float = 1.0) -> None:
    w = pool.workers[w_index]
    w.state = WorkerState.IDLE
    router.batch_done(w, BatchDone(router.in_flight(w).seq, compute_ms))


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def serve_some(router, pool) -> None:
    """Two answered batches (one request, then three), one request shed at arrival."""
    first = asyncio.ensure_future(router.infer(ROW, 1000.0))
    await settle()
    finish(router, pool, 0, 2.5)
    await first
    three = [asyncio.ensure_future(router.infer(ROW, 1000.0)) for _ in range(3)]
    await settle()
    finish(router, pool, 0, 4.0)
    await asyncio.gather(*three)
    assert (await router.infer(ROW, 0.001)).outcome.label == "shed"


def test_router_records_each_batch_and_each_second(fake_router):
    async def main():
        router, pool = fake_router(workers=1)
        await serve_some(router, pool)
        batches = list(router.activity.batches)
        assert [b[B["size"]] for b in batches] == [1, 3] and [b[B["in_time"]] for b in batches] == [1, 3]
        assert [b[B["compute_ms"]] for b in batches] == [2.5, 4.0] and {b[B["worker"]] for b in batches} == {0}
        assert batches[0][B["seq"]] < batches[1][B["seq"]] and batches[0][B["t"]] <= batches[1][B["t"]]
        served = [router.info.subnet_ids[b[B["subnet"]]] for b in batches]
        accuracy = {s.id: s.accuracy for s in router.info.profile.subnets}
        second = router.close_activity_second(batches[-1][B["t"]] + 0.1)
        assert (second[S["arrivals"]], second[S["in_time"]], second[S["late"]], second[S["shed"]]) == (5, 4, 0, 1)
        assert second[S["batches"]] == 2 and second[S["batch_mean"]] == 2.0
        expected = (accuracy[served[0]] + 3 * accuracy[served[1]]) / 4
        assert abs(second[S["accuracy"]] - expected) < 1e-12
        assert second[S["seq"]] > batches[-1][B["seq"]]  # one sequence for both kinds
        quiet = router.close_activity_second(second[S["t"]] + 1.0)  # nothing happened: zeros
        assert quiet[S["arrivals"]] == quiet[S["in_time"]] == quiet[S["shed"]] == quiet[S["batches"]] == 0
        assert quiet[S["accuracy"]] is None and quiet[S["batch_mean"]] is None
    asyncio.run(main())


def test_since_gives_each_record_once_and_the_rings_stay_bounded():
    log = ActivityLog([0.5, 0.9], batches=8, seconds=3)
    totals = Totals(0, {})
    for k in range(20):
        log.batches.append((next(log.seq), float(k), k % 2, 1, 1, 1.0, 0, 0))
        if k % 4 == 3:
            log.close_second(float(k), totals, 0, Estimate())
    assert len(log.batches) == 8 and len(log.seconds) == 3  # bounded whatever the load
    got = log.since(0, limit=100)
    seqs = [r[0] for r in got.batches + got.seconds]
    assert got.last_seq == max(seqs) == 25 and got.truncated  # the rings dropped older records
    assert len(set(seqs)) == len(seqs) == 11
    middle = got.batches[3][0]
    newer = log.since(middle, limit=100)
    assert all(r[0] > middle for r in newer.batches + newer.seconds) and not newer.truncated
    assert {r[0] for r in newer.batches + newer.seconds} == {s for s in seqs if s > middle}
    assert log.since(got.last_seq, limit=100).batches == [] and log.since(got.last_seq, limit=100).seconds == []
    limited = log.since(0, limit=2)
    assert [r[0] for r in limited.batches] == [r[0] for r in got.batches[-2:]] and limited.truncated


def rest_app(router, token: str | None):
    codec = InputCodec(router.info, ServeConfig(), 45.0)
    return RestApi(router.info, router, codec, router.metrics, 1 << 20, BearerAuth(token)).app()


def test_page_and_data_endpoints_with_a_token(fake_router):
    async def main():
        router, pool = fake_router(workers=1)
        await serve_some(router, pool)
        router.close_activity_second(router.activity.batches[-1][B["t"]] + 0.1)
        async with TestClient(TestServer(rest_app(router, "s3cret"))) as client:
            # The static page needs no token (it holds no data) and allows only this server.
            page = await client.get("/dashboard")
            assert page.status == 200 and page.content_type == "text/html"
            assert "default-src 'none'" in page.headers["Content-Security-Policy"]
            assert "/dashboard/dashboard.js" in await page.text()
            js = await client.get("/dashboard/dashboard.js")
            assert js.status == 200 and js.content_type == "text/javascript"
            # The data follows the token rule, and so does any other path.
            assert (await client.get("/v2/dashboard/data")).status == 401
            assert (await client.get("/dashboard/server.py")).status == 401
            auth = {"Authorization": "Bearer s3cret"}
            assert (await client.get("/dashboard/server.py", headers=auth)).status == 404
            assert (await client.get("/dashboard/..%2Frest.py", headers=auth)).status == 404
            assert (await client.get("/v2/dashboard/data", headers={"Authorization": "Bearer nope"})).status == 401
            first = await (await client.get("/v2/dashboard/data?since=0", headers=auth)).json()
            assert first["model"]["slo_ms"] == 45.0 and len(first["model"]["subnets"]) == len(router.info.subnet_ids)
            assert first["batch_fields"] == list(BATCH_WIRE_FIELDS) and len(first["batches"]) == 2
            wire = dict(zip(BATCH_WIRE_FIELDS, first["batches"][1]))
            kept = router.activity.batches[1]
            assert wire["t_ms"] == int(kept[B["t"]] * 1000) and wire["compute_us"] == 4000 and wire["size"] == 3
            assert len(first["seconds"]) == 1 and first["seconds"][0][S["arrivals"]] == 5
            assert first["workers"][0]["state"] == "idle" and first["calibration"] == {"calibration": "off"}
            assert first["last_seq"] == first["seconds"][0][0] and not first["reset"]
            # Incremental: nothing new since the last record; the model is not sent again.
            again = await (await client.get(f"/v2/dashboard/data?since={first['last_seq']}", headers=auth)).json()
            assert again["batches"] == again["seconds"] == [] and "model" not in again
            # A page that saw a later record (a previous server at this address) starts over.
            reset = await (await client.get("/v2/dashboard/data?since=99999", headers=auth)).json()
            assert reset["reset"] and "model" in reset and len(reset["batches"]) == 2
            for bad in ("-1", "x", "1.5", "9" * 40):
                r = await client.get(f"/v2/dashboard/data?since={bad}", headers=auth)
                assert r.status == 400 and "since" in (await r.json())["error"]
    asyncio.run(main())


def test_static_files_load_nothing_from_elsewhere():
    """No CDN: every file the page loads is one of the server's own (relative or root paths)."""
    static = resources.files("superserve.serving").joinpath("dashboard_static")
    html = static.joinpath("index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(r.startswith("/dashboard/") for r in refs), refs
    for name in ("dashboard.js", "dashboard.css"):
        text = static.joinpath(name).read_text()
        assert not re.search(r"https?://|url\(|@import|import\s*\(", text), name
    js = static.joinpath("dashboard.js").read_text()
    assert json.dumps("/v2/dashboard/data")[1:-1] in js  # the endpoint the server serves
