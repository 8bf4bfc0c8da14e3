"""Bundle hot reload (POST /v2/admin/reload, superserve/serving/reload.py), end to end: a real
server process, a real client sending a steady stream, a reload to a second bundle in the
middle. Every request sent is answered exactly once, none fails, and after the swap the new
bundle's SubNets serve. Refused reloads (no such directory, another input shape or class
count, a reload already under way) answer 4xx and the old bundle serves on."""
from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from superserve.bundle_layout import EMBEDDED_DIR, BundleLayout
from superserve.client import Client, SuperserveError
from superserve.scheduling.profile import LatencyProfile
from superserve.serving import ServerProcess

TOKEN = "reload-test-token"
PROFILE = LatencyProfile.load(BundleLayout(EMBEDDED_DIR).profile)
ORDERED = sorted(PROFILE.subnets, key=lambda s: s.accuracy)
OLD = [ORDERED[0].id, ORDERED[len(ORDERED) // 2].id, ORDERED[-1].id]  # what the server starts with
NEW = [ORDERED[1].id, ORDERED[len(ORDERED) // 2 + 1].id, ORDERED[-2].id]  # the second bundle's SubNets
IMAGE = np.zeros((28, 28), dtype=np.uint8)


def copy_bundle(dest: Path, subnets: list[str] | None = None, **spec_changes: Any) -> Path:
    """The embedded bundle copied to ``dest``: its profile cut to ``subnets``, its weights'
    spec edited by ``spec_changes`` (same tensors; only the metadata changes)."""
    shutil.copytree(EMBEDDED_DIR, dest)
    layout = BundleLayout(dest)
    if subnets is not None:
        data = json.loads(layout.profile.read_text())
        data["subnets"] = [s for s in data["subnets"] if s["id"] in subnets]
        layout.profile.write_text(json.dumps(data))
    if spec_changes:
        from safetensors.numpy import load_file, save_file

        from superserve.serving.model_info import read_safetensors_metadata

        meta = read_safetensors_metadata(layout.weights)
        meta["spec"] = json.dumps({**json.loads(meta["spec"]), **spec_changes})
        save_file(load_file(str(layout.weights)), str(layout.weights), metadata=meta)
    return dest


@pytest.fixture(scope="module")
def server():
    with ServerProcess(bundle=EMBEDDED_DIR, subnets=OLD, workers=1, warmup_runs=1, calibration_check_s=0,
                       auth_token=TOKEN, grpc_port=None) as srv:
        yield srv
    assert srv.proc.returncode == 0, srv.log_tail()


def post_reload(srv: ServerProcess, body: Any, token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(srv.http_url + "/v2/admin/reload", method="POST", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def get_json(srv: ServerProcess, path: str) -> dict[str, Any]:
    req = urllib.request.Request(srv.http_url + path, headers=srv.auth_headers)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def served_subnet(srv: ServerProcess) -> str:
    with Client(srv.http_url, token=TOKEN) as client:
        return client.infer(IMAGE, slo_ms=2000).subnet_id


def test_refusals_keep_the_old_bundle(server: ServerProcess, tmp_path: Path) -> None:
    cases = [
        ({"bundle": str(tmp_path / "no-such-bundle")}, 404, "no bundle directory"),
        ({"bundle": str(copy_bundle(tmp_path / "rgb", in_channels=3))}, 422, "input"),
        ({"bundle": str(copy_bundle(tmp_path / "classes", num_classes=7))}, 422, "classes"),
        ({"bundle": 42}, 400, "bundle"),
        ({"not": "a bundle"}, 400, "bundle"),
    ]
    for body, status, words in cases:
        got, answer = post_reload(server, body)
        assert got == status, (body, got, answer)
        assert words in answer["error"], answer
        assert served_subnet(server) in OLD
    # The CLI says why and exits 1.
    from typer.testing import CliRunner

    from superserve.cli import app

    out = CliRunner().invoke(app, ["reload", "--url", server.http_url, "--auth-token", TOKEN,
                                   str(tmp_path / "no-such-bundle")])
    assert out.exit_code == 1 and "HTTP 404" in out.output and "no bundle directory" in out.output, out.output
    got, _ = post_reload(server, {"bundle": str(EMBEDDED_DIR)}, token=None)
    assert got == 401  # behind the token like every endpoint but health
    assert get_json(server, "/v2/models/supernet/config")["parameters"]["subnets"]["string_value"] == ",".join(
        s.id for s in PROFILE.subset(OLD).subnets)


def test_reload_under_load(server: ServerProcess, tmp_path: Path) -> None:
    new_bundle = copy_bundle(tmp_path / "second", NEW)
    results: list[tuple[float, str]] = []  # (answered at, SubNet id) per request
    failures: list[str] = []
    sent = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def stream() -> None:
        with Client(server.http_url, token=TOKEN, timeout_s=30) as client:
            while not stop.is_set():
                with lock:
                    sent[0] += 1
                try:
                    p = client.infer(IMAGE, slo_ms=3000)
                    results.append((time.monotonic(), p.subnet_id))
                except SuperserveError as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.02)  # ~40 requests/s: modest, two cores share it with the new worker's warm-up

    threads = [threading.Thread(target=stream) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        reload_answer: list[tuple[int, dict[str, Any]]] = []
        reloader = threading.Thread(target=lambda: reload_answer.append(post_reload(server, {"bundle": str(new_bundle)})))
        reloader.start()
        time.sleep(0.3)
        second = post_reload(server, {"bundle": str(new_bundle)})  # one reload at a time
        assert second[0] == 409, second
        ready = urllib.request.urlopen(server.http_url + "/v2/health/ready", timeout=10).status
        assert ready == 200  # readiness holds during a reload: the old bundle serves meanwhile
        reloader.join(300)
        swapped_at = time.monotonic()
        assert reload_answer and reload_answer[0][0] == 200, (reload_answer, server.log_tail())
        time.sleep(1.5)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not failures, failures[:5]
    assert len(results) == sent[0] >= 100, (len(results), sent[0])
    before = {sid for t, sid in results if t < swapped_at - 20}
    after = [sid for t, sid in results if t > swapped_at]
    assert after and set(after) <= set(NEW), set(after)
    assert before <= set(OLD)
    assert {sid for _, sid in results} <= set(OLD) | set(NEW)
    body = reload_answer[0][1]
    assert body["subnets"] == [s.id for s in PROFILE.subset(NEW).subnets] and body["reloads"] == 1
    # Metadata, config and metrics follow the new bundle.
    cfg = get_json(server, "/v2/models/supernet/config")
    assert cfg["parameters"]["subnets"]["string_value"] == ",".join(body["subnets"])
    assert get_json(server, "/v2/models/supernet")["parameters"]["subnets"] == len(NEW)
    req = urllib.request.Request(server.http_url + "/metrics", headers=server.auth_headers)
    metrics = urllib.request.urlopen(req, timeout=30).read().decode()
    assert any(f'subnet_id="{sid}"' in metrics for sid in NEW)
    events = [e["event"] for e in server.events()]
    assert "bundle_swapped" in events and "reload_done" in events, events


def test_swap_answers_the_old_workers_batch_and_serves_the_queue_on_the_new_bundle(fake_router) -> None:
    """The switch itself, on a fake pool: a batch running on an old worker at the switch is
    answered from it (old SubNet); a request queued at the switch runs on the new worker with
    the new SubNet set; the old worker gets nothing more and is released once idle."""
    import asyncio
    import dataclasses

    from conftest import FakePool

    from superserve.outcome import Outcome
    from superserve.scheduling import make_policy
    from superserve.serving.messages import BatchDone
    from superserve.serving.model_info import ModelInfo
    from superserve.serving.pool import WorkerState

    row = bytes(4 * 784)

    async def main() -> None:
        router, old_pool = fake_router(1, num_subnets=4)
        first = asyncio.ensure_future(router.infer(row, 1000.0))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert len(old_pool.runs) == 1  # running on the old worker
        queued = asyncio.ensure_future(router.infer(row, 1000.0))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert len(router.queue) == 1  # the only worker is busy: it waits, no SubNet chosen yet

        synthetic = LatencyProfile.synthetic(num_subnets=3)
        profile = LatencyProfile(tuple(dataclasses.replace(s, id="new-" + s.id) for s in synthetic.subnets),
                                 synthetic.device, synthetic.meta)
        new_pool = FakePool(1)
        for w in new_pool.workers:
            w.state = WorkerState.IDLE
        old_worker = old_pool.workers[0]
        retired = router.swap_bundle(ModelInfo("m", (1, 28, 28), 10, profile, None),
                                     make_policy("slackfit", profile), new_pool)
        assert retired == [old_worker]
        for _ in range(3):
            await asyncio.sleep(0)
        assert len(new_pool.runs) == 1 and len(old_pool.runs) == 1  # the queued request went to the new worker
        waiting = asyncio.ensure_future(router.wait_retired(5.0))
        await asyncio.sleep(0)
        assert not waiting.done()
        old_worker.state = WorkerState.IDLE
        router.batch_done(old_worker, BatchDone(router.in_flight(old_worker).seq, 1.0))
        assert await waiting
        a = await first
        assert a.outcome is Outcome.IN_TIME and a.subnet_id.startswith("syn")
        new_worker = new_pool.workers[0]
        new_worker.state = WorkerState.IDLE
        router.batch_done(new_worker, BatchDone(router.in_flight(new_worker).seq, 1.0))
        b = await queued
        assert b.outcome is Outcome.IN_TIME and b.subnet_id.startswith("new-syn")
        after = asyncio.ensure_future(router.infer(row, 1000.0))
        for _ in range(3):
            await asyncio.sleep(0)
        assert len(old_pool.runs) == 1 and len(new_pool.runs) == 2  # nothing more for the old worker
        new_worker.state = WorkerState.IDLE
        router.batch_done(new_worker, BatchDone(router.in_flight(new_worker).seq, 1.0))
        assert (await after).subnet_id.startswith("new-syn")
    asyncio.run(main())
