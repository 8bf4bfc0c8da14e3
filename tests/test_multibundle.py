"""Several SuperNets in one server (`superserve serve --bundle embedded --bundle vit`).

First without processes: the naming of models, the RunBatch wire format, and the sharing rule
(global EDF across the models' queues, superserve/serving/multi.py) on a fake pool. Then one
real server serving the conv and the ViT bundles at once, through tritonclient (HTTP and
gRPC): each name answers with its own model's logits, interleaved requests to both are all
answered, the metrics count each model apart, an unknown name is refused, and a flood on one
model leaves the other's requests answered within their SLO.
"""
from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from conftest import FakePool  # tests/ is on sys.path (pytest prepend import mode)
from superserve.bundle_layout import EMBEDDED_DIR, EMBEDDED_VIT_DIR, BundleLayout
from superserve.outcome import Outcome
from superserve.scheduling import make_policy
from superserve.scheduling.profile import LatencyProfile
from superserve.serving import ServeConfig, ServerProcess
from superserve.serving.messages import BatchDone, RunBatch, decode, encode
from superserve.serving.pool import WorkerState

ROW = bytes(4 * 784)
MODELS = ("embedded", "vit")
needs_vit = pytest.mark.skipif(not BundleLayout(EMBEDDED_VIT_DIR).weights.exists(),
                               reason="the ViT bundle is not built")


# --- configuration and wire format ------------------------------------------------------------
def test_model_names_from_the_bundles(tmp_path):
    from superserve.serving.config import model_configs

    one = ServeConfig(bundle="vit")
    assert model_configs(one) == [one] and one.model_name == "supernet"  # one bundle: as before
    (tmp_path / "mine").mkdir()
    cfgs = model_configs(ServeConfig(bundles=["embedded", "vit", str(tmp_path / "mine"), f"conv2={EMBEDDED_DIR}"]))
    assert [c.model_name for c in cfgs] == ["embedded", "vit", "mine", "conv2"]
    assert [c.bundle for c in cfgs] == ["embedded", "vit", str(tmp_path / "mine"), str(EMBEDDED_DIR)]
    with pytest.raises(ValueError, match="two bundles would be served as model 'vit'"):
        ServeConfig(bundles=["vit", "vit"]).validate()
    with pytest.raises(ValueError, match="backend local"):
        ServeConfig(bundles=["embedded", "vit"], backend="ray").validate()
    with pytest.raises(ValueError, match="subnets"):
        ServeConfig(bundles=["embedded", "vit"], subnets=["x"]).validate()


def test_cli_takes_repeated_bundles():
    from typer.testing import CliRunner

    from superserve.cli import app

    result = CliRunner().invoke(app, ["serve", "--bundle", "vit", "--bundle", "vit"])
    assert result.exit_code == 2 and "two bundles would be served as model 'vit'" in result.output
    result = CliRunner().invoke(app, ["serve", "--bundle", "embedded", "--bundle", "vit", "--backend", "ray"])
    assert result.exit_code == 2 and "needs backend local" in result.output


def test_run_batch_names_its_model():
    assert len(encode(RunBatch(7, 3, 16))) == 9  # the first model's message is unchanged
    for msg in (RunBatch(7, 3, 16), RunBatch(8, 2, 4, model=1)):
        assert decode(encode(msg)) == msg


def test_workers_load_every_model_on_slabs_for_the_largest_row():
    from superserve.serving.model_info import ModelInfo
    from superserve.serving.pool import WorkerHandle, slab_bytes, worker_spec
    from superserve.serving.worker import WorkerSpec

    conv = ModelInfo("conv", (1, 28, 28), 10, LatencyProfile.synthetic(num_subnets=2), EMBEDDED_DIR)
    bert = ModelInfo("bert", (1, 1, 128), 3, LatencyProfile.synthetic(num_subnets=2), EMBEDDED_VIT_DIR,
                     input_datatype="INT64", vocab_size=100)
    wide = ModelInfo("wide", (3, 32, 32), 100, LatencyProfile.synthetic(num_subnets=2), EMBEDDED_VIT_DIR)
    mb = conv.profile.max_batch
    assert slab_bytes([conv, bert, wide]) == (mb * 4 * 3 * 32 * 32, mb * 4 * 100)
    spec = worker_spec(conv, ServeConfig(), WorkerHandle(0, None, None, memoryview(b""), memoryview(b"")),
                       "in", "out", [bert, wide])
    again = WorkerSpec.from_json(spec.to_json())
    assert again == spec and [m.input_shape for m in again.models] == [(1, 28, 28), (1, 1, 128), (3, 32, 32)]
    assert again.others[0].input_shm == "in" and again.others[1].num_classes == 100


# --- the sharing rule, on a fake pool ------------------------------------------------------------
def _mux(workers: int = 1):
    """Two routers (models 0 and 1) over one fake pool, joined by a ModelMux; warm, accepting."""
    from superserve.serving.metrics import ServingMetrics
    from superserve.serving.model_info import ModelInfo
    from superserve.serving.multi import ModelMux
    from superserve.serving.router import Router

    pool = FakePool(workers)
    routers = []
    for name in ("a", "b"):
        profile = LatencyProfile.synthetic(num_subnets=3)
        routers.append(Router(ModelInfo(name, (1, 28, 28), 10, profile, None),
                              make_policy("slackfit", profile, quantile="p50"),
                              ServingMetrics({s.id: s.accuracy for s in profile.subnets}, 16),
                              queue_capacity=4096, pool=pool, loop=asyncio.get_running_loop()))
    mux = ModelMux(routers, pool)
    for w in pool.workers:
        w.state = WorkerState.IDLE
        mux.worker_ready(w)
    for r in routers:
        r.accepting = True
    return mux, routers, pool


def _finish(mux, pool, w_index: int) -> None:
    w = pool.workers[w_index]
    w.state = WorkerState.IDLE
    mux.batch_done(w, BatchDone(mux.in_flight(w).seq, 1.0))


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def test_free_worker_goes_to_the_earliest_head_across_models():
    async def main():
        mux, (a, b), pool = _mux(workers=1)
        busy = asyncio.ensure_future(a.infer(ROW, 60_000.0))  # occupies the worker
        await _settle()
        flood = [asyncio.ensure_future(a.infer(ROW, 30_000.0)) for _ in range(200)]  # model a's flood
        urgent = asyncio.ensure_future(b.infer(ROW, 5_000.0))  # model b: due before all of a's
        await _settle()
        assert len(pool.runs) == 1
        _finish(mux, pool, 0)
        await _settle()
        assert pool.runs[-1][1].model == 1 and pool.runs[-1][2] == 1  # b's request goes next
        _finish(mux, pool, 0)
        assert (await urgent).outcome is Outcome.IN_TIME and (await busy).ok
        await _settle()
        assert pool.runs[-1][1].model == 0  # then a's flood again
        for t in flood:
            t.cancel()
    asyncio.run(main())


def test_a_flood_delays_the_other_model_only_as_edf_does():
    async def main():
        mux, (a, b), pool = _mux(workers=1)
        early = [asyncio.ensure_future(a.infer(ROW, 2_000.0)) for _ in range(3)]
        await _settle()  # one batch of a's runs
        later = asyncio.ensure_future(b.infer(ROW, 20_000.0))  # due after a's waiting requests
        await _settle()
        flood = [asyncio.ensure_future(a.infer(ROW, 40_000.0)) for _ in range(100)]  # due after b's
        await _settle()
        models = []
        while not later.done():
            models.append(pool.runs[-1][1].model)
            _finish(mux, pool, 0)
            await _settle()
        # a's earlier-deadline requests first, then b's; a's later flood did not get ahead of it
        assert models[-1] == 1 and set(models[:-1]) == {0}
        assert sum(pool.runs[i][2] for i in range(len(models) - 1)) == 3
        assert (await later).outcome is Outcome.IN_TIME
        assert all(t.done() and t.result().ok for t in early)
        for t in flood:
            t.cancel()
    asyncio.run(main())


def test_a_dead_workers_batch_goes_back_to_its_own_model():
    async def main():
        mux, (a, b), pool = _mux(workers=2)
        task = asyncio.ensure_future(b.infer(ROW, 5_000.0))
        await _settle()
        (first, msg, _), = pool.runs
        assert msg.model == 1
        w = pool.workers[first]
        w.state = WorkerState.DEAD
        mux.worker_died(w)  # killed from outside: the batch is re-queued on model b's queue
        await _settle()
        assert pool.runs[-1][0] != first and pool.runs[-1][1].model == 1
        _finish(mux, pool, pool.runs[-1][0])
        assert (await task).outcome is Outcome.IN_TIME
        assert a.metrics.worker_deaths._value.get() == 1  # the pool's counter, exported once
    asyncio.run(main())


# --- one real server, two SuperNets -------------------------------------------------------------
@pytest.fixture(scope="module")
def server():
    if not BundleLayout(EMBEDDED_VIT_DIR).weights.exists():
        pytest.skip("the ViT bundle is not built")
    with ServerProcess(bundles=list(MODELS), workers=1, warmup_runs=1, calibration_check_s=0.5) as srv:
        yield srv
    assert srv.proc.returncode == 0, srv.log_tail()  # SIGTERM: graceful, exit 0


@pytest.fixture(scope="module")
def bundles():
    from superserve.embedded import load_bundle

    return {name: load_bundle(name) for name in MODELS}


def _local(bundle, subnet_id: str, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        bundle.model.actuate(subnet_id)
        return bundle.model(x).numpy()


def _http(srv, method: str, path: str, body: bytes | None = None):
    req = urllib.request.Request(srv.http_url + path, data=body, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _metrics(srv) -> dict[str, float]:
    text = _http(srv, "GET", "/metrics")[1].decode()
    return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in text.splitlines()
                                     if line and not line.startswith("#"))}


@needs_vit
def test_each_name_answers_with_its_own_model_tritonclient_http(server, bundles):
    import tritonclient.http as th

    client = th.InferenceServerClient(server.http_address)
    assert client.is_server_ready()
    index = {m["name"]: m["state"] for m in client.get_model_repository_index()}
    assert index == {name: "READY" for name in MODELS}
    for name in MODELS:
        assert client.is_model_ready(name)
        assert client.get_model_metadata(name)["name"] == name
        x = bundles[name].subset().normalized(0, 3)
        for i in range(3):
            inp = th.InferInput("input", [1, 1, 28, 28], "FP32")
            inp.set_data_from_numpy(x[i:i + 1].numpy())
            result = client.infer(name, [inp], parameters={"slo_ms": 5000})
            resp = result.get_response()
            assert resp["model_name"] == name
            subnet = resp["parameters"]["subnet_id"]
            assert subnet in {s.id for s in bundles[name].profile.subnets}
            np.testing.assert_allclose(result.as_numpy("logits")[0], _local(bundles[name], subnet, x[i:i + 1])[0],
                                       rtol=1e-4, atol=1e-4)


@needs_vit
def test_each_name_answers_with_its_own_model_tritonclient_grpc(server, bundles):
    import tritonclient.grpc as tg

    client = tg.InferenceServerClient(server.grpc_address)
    for name in MODELS:
        assert client.is_model_ready(name)
        assert client.get_model_config(name, as_json=True)["config"]["name"] == name
        x = bundles[name].subset().normalized(3, 5)
        for i in range(2):
            inp = tg.InferInput("input", [1, 1, 28, 28], "FP32")
            inp.set_data_from_numpy(x[i:i + 1].numpy())
            result = client.infer(name, [inp], parameters={"slo_ms": "5000"})
            resp = result.get_response(as_json=True)
            assert resp["model_name"] == name
            subnet = resp["parameters"]["subnet_id"]["string_param"]
            np.testing.assert_allclose(result.as_numpy("logits")[0], _local(bundles[name], subnet, x[i:i + 1])[0],
                                       rtol=1e-4, atol=1e-4)


@needs_vit
def test_unknown_model_is_refused_over_both_protocols(server):
    import tritonclient.grpc as tg
    from tritonclient.utils import InferenceServerException

    status, body = _http(server, "POST", "/v2/models/nope/infer", b"{}")
    assert status == 404 and "unknown model 'nope'; this server serves 'embedded', 'vit'" in json.loads(body)["error"]
    assert _http(server, "GET", "/v2/models/nope")[0] == 404
    inp = tg.InferInput("input", [1, 1, 28, 28], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        tg.InferenceServerClient(server.grpc_address).infer("nope", [inp])
    status, body = _http(server, "POST", "/v2/admin/reload", json.dumps({"bundle": "vit"}).encode())
    assert status == 501 and "serves 2 bundles" in json.loads(body)["error"]  # one bundle's feature


async def _infer(session, srv, name: str, x: np.ndarray, slo_ms: float) -> tuple[int, dict, float]:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": x.reshape(-1).tolist()}],
            "parameters": {"slo_ms": slo_ms}}
    t0 = time.perf_counter()
    async with session.post(f"{srv.http_url}/v2/models/{name}/infer", json=body) as r:
        return r.status, await r.json(), (time.perf_counter() - t0) * 1000.0


@needs_vit
def test_interleaved_requests_to_both_are_answered_and_counted_apart(server, bundles):
    import aiohttp

    before = _metrics(server)
    x = {name: bundles[name].subset().normalized(0, 20).numpy() for name in MODELS}

    async def burst():
        async with aiohttp.ClientSession() as s:
            return await asyncio.gather(*(_infer(s, server, MODELS[i % 2], x[MODELS[i % 2]][i // 2], 5000)
                                          for i in range(40)))

    results = asyncio.run(burst())
    assert all(status == 200 for status, _, _ in results), [r for r in results if r[0] != 200][:2]
    for i, (_, out, _) in enumerate(results):
        name = MODELS[i % 2]
        assert out["model_name"] == name
        expected = _local(bundles[name], out["parameters"]["subnet_id"], torch.from_numpy(x[name][i // 2][None]))
        np.testing.assert_allclose(np.array(out["outputs"][0]["data"], np.float32), expected[0], rtol=1e-4, atol=1e-4)
    after = _metrics(server)
    for name in MODELS:
        keys = [f'superserve_requests_total{{model="{name}",outcome="{o}"}}' for o in ("in_time", "late")]
        assert sum(after[k] - before[k] for k in keys) == 20
        batches = f'superserve_batch_size_count{{model="{name}"}}'
        assert after[batches] > before[batches]
    assert after['superserve_workers{state="ready"}'] == 1  # the shared pool: once, no model label


@needs_vit
def test_a_flood_on_one_model_leaves_the_other_within_its_slo(server, bundles):
    """48 closed-loop clients keep the conv model's queue full with loose deadlines (2 s);
    the ViT model's requests (250 ms) are due first and go first: answered in time (the
    server's verdict; this process's own loop is busy flooding). An arbiter that served the
    flooded model's queue first would starve them (tried: they were shed)."""
    import aiohttp

    x = {name: bundles[name].subset().normalized(0, 8).numpy() for name in MODELS}
    flood_s, slo_ms = 3.0, 250.0

    async def main():
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            stop = time.perf_counter() + flood_s

            async def flooder(k: int) -> int:
                n = 0
                while time.perf_counter() < stop:
                    n += (await _infer(s, server, "embedded", x["embedded"][k % 8], 2000))[0] == 200
                return n

            async def probe() -> list[tuple[int, dict, float]]:  # the ViT model, now and then
                out = []
                await asyncio.sleep(0.5)
                while time.perf_counter() < stop - 0.3:
                    out.append(await _infer(s, server, "vit", x["vit"][len(out) % 8], slo_ms))
                    await asyncio.sleep(0.1)
                return out

            return await asyncio.gather(probe(), *(flooder(k) for k in range(48)))

    probes, *flooded = asyncio.run(main())
    assert sum(flooded) > 10 * len(probes) and len(probes) >= 5
    answered = [p for p in probes if p[0] == 200]
    assert len(answered) == len(probes), [p for p in probes if p[0] != 200][:2]
    in_time = [p for p in answered if p[1]["parameters"]["outcome"] == "in_time"]
    assert len(in_time) >= len(probes) - 1, [p[1]["parameters"] for p in answered]
