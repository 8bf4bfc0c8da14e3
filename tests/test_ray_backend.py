"""The Ray backend end to end: a real two-node Ray cluster on this machine (bound to
127.0.0.1), a real server with its workers as Ray actors, a real client.

Answers equal a local forward pass of the SubNet that served them; a killed actor mid-load
and a lost node cost no request its answer (sent = answered) and serving goes on; workers
added and removed while serving are used at once. One cluster and one server for the module.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the Ray backend's tests need Ray: pip install -e '.[test]'")
from ray.cluster_utils import Cluster  # noqa: E402

import aiohttp  # noqa: E402

from superserve.embedded import EMBEDDED_DIR  # noqa: E402
from superserve.serving import ServerProcess  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
URL = "/v2/models/supernet/infer"
# A few SubNets across the accuracy range: warm-up (every SubNet at every batch size) stays short.
SUBNETS = ["w025-d111-e25.25.25", "w050-d112-e50.50.2575", "w075-d214-e7525.75.75505050",
           "w100-d444-e75757575.75757575.75757575"]


def _served_subnets() -> list[str]:
    ids = [s["id"] for s in json.loads((EMBEDDED_DIR / "profile.json").read_text())["subnets"]]
    chosen = [s for s in SUBNETS if s in ids]
    return chosen if len(chosen) >= 2 else [ids[0], ids[len(ids) // 2], ids[-1]]


@pytest.fixture(scope="module")
def cluster():
    # The nodes' processes (and the actors) import superserve from this checkout.
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + old if old else "")
    c = Cluster(initialize_head=True, connect=False,
                head_node_args={"num_cpus": 2, "include_dashboard": False, "node_ip_address": "127.0.0.1"})
    worker_node = c.add_node(num_cpus=2, node_ip_address="127.0.0.1")
    c.wait_for_nodes()
    try:
        yield c, worker_node
    finally:
        c.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def server(cluster):
    c, _ = cluster
    srv = ServerProcess(backend="ray", ray_address=c.address, workers=2, subnets=_served_subnets(),
                        warmup_runs=1, calibration_check_s=0.5, grpc_port=None, restart_backoff_s=0.05,
                        late="serve", startup_timeout_s=180.0).start()
    yield srv
    assert srv.stop() == 0, srv.log_tail()


def fp32_body(row: np.ndarray, slo_ms: float = 5000.0) -> bytes:
    return json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28],
                                   "data": row.ravel().tolist()}], "parameters": {"slo_ms": slo_ms}}).encode()


async def _post(s: aiohttp.ClientSession, url: str, data: bytes) -> tuple[int, dict[str, Any]]:
    async with s.post(url, data=data, headers={"Content-Type": "application/json"}) as r:
        return r.status, json.loads(await r.read())


async def load(url: str, n: int, rate: float, slo_ms: float = 2000.0, during=None) -> list[tuple[int, dict]]:
    """Requests at ``rate`` per second (open loop): ``n`` of them, and with ``during`` (run
    concurrently) until it is done too. Every request's outcome: (status, body), or
    (-1, {"error": ...}) if it got no answer."""
    rng = np.random.default_rng(0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        async def one() -> tuple[int, dict]:
            try:
                return await _post(s, url, fp32_body(rng.standard_normal(784).astype(np.float32), slo_ms))
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                return -1, {"error": repr(exc)}
        side = asyncio.ensure_future(during()) if during is not None else None
        tasks = []
        while len(tasks) < n or (side is not None and not side.done()):
            tasks.append(asyncio.ensure_future(one()))
            await asyncio.sleep(1 / rate)
        results = await asyncio.gather(*tasks)
        if side is not None:
            await side
        return results


def admin(srv: ServerProcess, method: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    async def go():
        async with aiohttp.ClientSession() as s:
            kw = {} if body is None else {"data": json.dumps(body).encode()}
            async with s.request(method, srv.http_url + "/v2/admin/workers", **kw) as r:
                return r.status, json.loads(await r.read())
    return asyncio.run(go())


def wait_for(pred, timeout_s: float = 60.0) -> None:
    end = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.1)


def test_answers_equal_a_local_forward_and_workers_spread_over_nodes(server):
    torch = pytest.importorskip("torch")
    from superserve.supernet import load_supernet

    rows = [np.random.default_rng(k).standard_normal((1, 28, 28)).astype(np.float32) for k in range(6)]

    async def go():
        async with aiohttp.ClientSession() as s:
            return await asyncio.gather(*[_post(s, server.http_url + URL, fp32_body(r)) for r in rows])
    answers = asyncio.run(go())
    model = load_supernet(EMBEDDED_DIR / "weights.safetensors", EMBEDDED_DIR / "subnetnorm.safetensors")
    with torch.inference_mode():
        for row, (status, body) in zip(rows, answers):
            assert status == 200, body
            model.actuate(body["parameters"]["subnet_id"])
            want = model(torch.from_numpy(row)[None]).numpy()[0]
            got = np.asarray(body["outputs"][0]["data"], np.float32)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    ready = [e for e in server.events() if e["event"] == "worker_ready"]
    assert len({e["node_id"] for e in ready[:2]}) == 2, ready  # SPREAD: one actor per node


def test_bad_scaling_requests_are_refused(server):
    for body in ({"count": 0}, {"count": "2"}, {"count": True}, {"n": 2}, [2], {"count": 10**6}):
        status, answer = admin(server, "POST", body)
        assert status == 400 and "count" in answer["error"], (body, status, answer)
    status, info = admin(server, "GET")
    assert status == 200 and info["workers"] == 2 and info["backend"] == "ray"


def test_workers_added_and_removed_while_serving(server):
    url = server.http_url + URL
    seen: dict[str, Any] = {}

    async def scale():
        await asyncio.sleep(0.5)
        seen["up"] = await asyncio.to_thread(admin, server, "POST", {"count": 3})
        await asyncio.sleep(1.0)
        seen["down"] = await asyncio.to_thread(admin, server, "POST", {"count": 1})
        await asyncio.sleep(0.5)
    results = asyncio.run(load(url, 100, 40.0, during=scale))
    status, up = seen["up"]
    assert status == 200 and up["workers"] == 3 and up["ready"] == 3, up
    status, down = seen["down"]
    assert status == 200 and down["workers"] == 1, down
    assert len(results) >= 100 and all(s != -1 for s, _ in results), [r for r in results if r[0] == -1][:3]
    assert all(s in (200, 503) for s, _ in results), {s for s, _ in results}
    served_by = {b["parameters"]["worker"] for s, b in results if s == 200}
    assert 2 in served_by, served_by  # the added worker served at once
    after = asyncio.run(load(url, 10, 50.0))
    assert all(s == 200 and b["parameters"]["worker"] == 0 for s, b in after), after
    status, up = admin(server, "POST", {"count": 2})
    assert status == 200 and up["ready"] == 2


def test_killed_actor_mid_load_every_request_answered(server):
    url = server.http_url + URL
    before = len([e for e in server.events() if e["event"] == "worker_ready"])
    status, info = admin(server, "GET")
    pid = info["worker_pids"][0]

    async def kill():
        await asyncio.sleep(1.0)
        os.kill(pid, signal.SIGKILL)
    results = asyncio.run(load(url, 160, 40.0, during=kill))
    assert len(results) == 160 and all(s != -1 for s, _ in results), [r for r in results if r[0] == -1][:3]
    assert all(s in (200, 503) for s, _ in results), {s for s, _ in results}
    assert sum(s == 200 for s, _ in results) >= 150
    died = [e for e in server.events() if e["event"] == "worker_died"]
    assert died and died[-1]["worker"] == 0 and "ActorDiedError" in died[-1]["reason"], died
    wait_for(lambda: len([e for e in server.events() if e["event"] == "worker_ready"]) > before)
    after = asyncio.run(load(url, 20, 50.0))
    assert all(s == 200 for s, _ in after)
    assert {b["parameters"]["worker"] for _, b in after} == {0, 1}  # the restarted actor serves


def test_hot_reload_onto_new_actors_while_serving(server, tmp_path):
    import shutil

    profile = json.loads((EMBEDDED_DIR / "profile.json").read_text())
    new_ids = [sid for sid in (s["id"] for s in profile["subnets"]) if sid not in _served_subnets()][:2]
    bundle = tmp_path / "bundle"
    shutil.copytree(EMBEDDED_DIR, bundle)
    profile["subnets"] = [s for s in profile["subnets"] if s["id"] in new_ids]
    (bundle / "profile.json").write_text(json.dumps(profile))
    seen: dict[str, Any] = {}

    async def reload():
        async with aiohttp.ClientSession() as s:
            async with s.post(server.http_url + "/v2/admin/reload", data=json.dumps({"bundle": str(bundle)})) as r:
                seen["reload"] = r.status, json.loads(await r.read())
    results = asyncio.run(load(server.http_url + URL, 40, 40.0, during=reload))
    status, body = seen["reload"]
    assert status == 200 and len(body["worker_pids"]) == 2, body
    assert all(s == 200 for s, _ in results), {s for s, _ in results}
    after = asyncio.run(load(server.http_url + URL, 10, 50.0))
    assert all(s == 200 and b["parameters"]["subnet_id"] in new_ids for s, b in after), after
    _, info = admin(server, "GET")
    assert info["ready"] == 2 and info["backend"] == "ray"


def test_lost_node_mid_load_every_request_answered(cluster, server):
    c, worker_node = cluster
    url = server.http_url + URL
    ready_before = len([e for e in server.events() if e["event"] == "worker_ready"])
    _, info = admin(server, "GET")
    lost = [i for i, node in enumerate(info["nodes"]) if node == worker_node.node_id]
    assert lost, info  # SPREAD put an actor on each node

    async def lose_node():
        await asyncio.sleep(1.0)
        await asyncio.to_thread(c.remove_node, worker_node)
    results = asyncio.run(load(url, 160, 40.0, during=lose_node))
    assert len(results) == 160 and all(s != -1 for s, _ in results), [r for r in results if r[0] == -1][:3]
    assert all(s in (200, 503) for s, _ in results), {s for s, _ in results}
    assert sum(s == 200 for s, _ in results) >= 150
    died = [e for e in server.events() if e["event"] == "worker_died"]
    assert {e["worker"] for e in died[-len(lost):]} == set(lost), died
    # The actor of the lost node is restarted on the node left; both serve again.
    wait_for(lambda: len([e for e in server.events() if e["event"] == "worker_ready"]) >= ready_before + len(lost), 90)
    after = asyncio.run(load(url, 20, 50.0))
    assert all(s == 200 for s, _ in after)
    status, info = admin(server, "GET")
    assert info["ready"] == 2 and "on 1 node" in info["describe"], info


def test_the_workers_command_reports_and_scales(server):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "superserve.cli", "workers", "--url", server.http_url],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "2 Ray actor(s) on" in out.stdout and ", 2 ready" in out.stdout, out
    bad = subprocess.run([sys.executable, "-m", "superserve.cli", "workers", "0", "--url", server.http_url],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "HTTP 400" in bad.stderr, bad


def test_an_unreachable_cluster_is_a_clear_error_not_a_hang():
    import subprocess
    import sys

    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "superserve.cli", "serve", "--backend", "ray", "--address",
                          "127.0.0.1:9", "--http-port", "0", "--grpc-port", "-1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "cannot reach the Ray cluster at 127.0.0.1:9" in out.stderr, out
    assert time.monotonic() - t0 < 60


def test_settings_the_ray_backend_refuses():
    from superserve.serving.config import ServeConfig

    with pytest.raises(ValueError, match="backend must be one of"):
        ServeConfig(backend="k8s").validate()
    with pytest.raises(ValueError, match="standby_workers is not supported with backend ray"):
        ServeConfig(backend="ray", standby_workers=1).validate()
    with pytest.raises(ValueError, match="backend ray runs CPU actors only"):
        ServeConfig(backend="ray", device="cuda").validate()


def test_how_a_ray_death_reads_to_the_router():
    from superserve.serving.ray_pool import _is_loopback, exit_code_of

    assert exit_code_of(RuntimeError("The actor was killed by `ray.kill`")) is None  # killed from outside
    assert exit_code_of(RuntimeError("The actor died because its node has died. Node Id: ab")) is None
    assert exit_code_of(RuntimeError("The actor is dead because its worker process has died. "
                                     "Worker exit type: SYSTEM_ERROR")) == 1  # a crash: its batch re-runs alone
    assert _is_loopback("127.0.0.1:6379") and _is_loopback("localhost:1") and _is_loopback("[::1]:6379")
    assert not _is_loopback("10.0.0.5:6379") and not _is_loopback("ray://10.0.0.5:10001")
