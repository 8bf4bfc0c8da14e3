"""End to end: a real `superserve serve` process (2 workers) over loopback, real clients.

Bundle: the embedded SuperNet, or $SUPERSERVE_BUNDLE (development, e.g. before the embedded
one is built). One server is shared by the whole module.
"""
from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request

import aiohttp
import numpy as np
import pytest
import torch

from superserve.datasets import normalize
from superserve.embedded import EMBEDDED_DIR, load_bundle
from superserve.serving import ServerProcess

BUNDLE = os.environ.get("SUPERSERVE_BUNDLE", str(EMBEDDED_DIR))
MODEL = "supernet"


@pytest.fixture(scope="module")
def server():
    with ServerProcess(bundle=BUNDLE, workers=2, warmup_runs=1) as srv:
        yield srv
    assert srv.proc.returncode == 0, srv.log_tail()  # SIGTERM: graceful, exit 0


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(BUNDLE)


def http(srv, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, headers, body) without raising on 4xx/5xx."""
    req = urllib.request.Request(srv.http_url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def json_request(image: np.ndarray, datatype: str = "FP32", shape=(1, 1, 28, 28), **params) -> bytes:
    body = {"inputs": [{"name": "input", "datatype": datatype, "shape": list(shape),
                        "data": image.reshape(-1).tolist()}]}
    if params:
        body["parameters"] = params
    return json.dumps(body).encode()


def binary_request(image: np.ndarray, **params) -> tuple[bytes, dict]:
    raw = np.ascontiguousarray(image, dtype="<f4").tobytes()
    head = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28],
                        "parameters": {"binary_data_size": len(raw)}}],
            "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}
    if params:
        head["parameters"] = params
    h = json.dumps(head).encode()
    return h + raw, {"Inference-Header-Content-Length": str(len(h)), "Content-Type": "application/octet-stream"}


def local_logits(bundle, subnet_id: str, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        bundle.model.actuate(subnet_id)
        return bundle.model(x).numpy()


# --- health, metadata, config ----------------------------------------------------------------
def test_health_metadata_and_config(server):
    assert http(server, "GET", "/v2/health/live")[0] == 200
    assert http(server, "GET", "/v2/health/ready")[0] == 200
    assert http(server, "GET", f"/v2/models/{MODEL}/ready")[0] == 200
    meta = json.loads(http(server, "GET", "/v2")[2])
    assert "binary_tensor_data" in meta["extensions"] and "statistics" not in meta["extensions"]
    model = json.loads(http(server, "GET", f"/v2/models/{MODEL}")[2])
    assert model["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}
    config = json.loads(http(server, "GET", f"/v2/models/{MODEL}/config")[2])
    assert config["max_batch_size"] > 0  # perf_analyzer: the first dimension is the batch
    assert config["input"][0]["dims"] == [1, 28, 28] and config["input"][0]["data_type"] == "TYPE_FP32"
    assert http(server, "GET", "/v2/models/nope")[0] == 404


# --- predictions equal the SuperNet's own ----------------------------------------------------
def test_predictions_equal_the_actuated_supernet(server, bundle):
    images = bundle.subset().images[:12]
    x = normalize(images)
    served = set()
    for i in range(len(images)):
        if i % 3 == 0:  # JSON, FP32
            status, _, body = http(server, "POST", f"/v2/models/{MODEL}/infer", json_request(x[i].numpy()),
                                   {"Content-Type": "application/json"})
            out = json.loads(body)
            logits = np.array(out["outputs"][0]["data"], dtype=np.float32)
        elif i % 3 == 1:  # JSON, UINT8 raw pixels normalised by the server
            status, _, body = http(server, "POST", f"/v2/models/{MODEL}/infer",
                                   json_request(images[i].numpy(), "UINT8", (1, 28, 28)))
            out = json.loads(body)
            logits = np.array(out["outputs"][0]["data"], dtype=np.float32)
        else:  # binary tensor extension
            req, headers = binary_request(x[i].numpy())
            status, h, body = http(server, "POST", f"/v2/models/{MODEL}/infer", req, headers)
            n = int(h["Inference-Header-Content-Length"])
            out = json.loads(body[:n])
            logits = np.frombuffer(body[n:], dtype="<f4")
        assert status == 200, body
        p = out["parameters"]
        assert p["outcome"] in ("in_time", "late") and p["batch_size"] >= 1 and p["compute_ms"] > 0
        expected = local_logits(bundle, p["subnet_id"], x[i:i + 1])[0]
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
        assert p["accuracy"] == bundle.profile.by_id(p["subnet_id"]).accuracy
        served.add(p["subnet_id"])
    assert served <= {s.id for s in bundle.profile.subnets}


# --- existing clients ------------------------------------------------------------------------
def test_tritonclient_http_round_trip(server, bundle):
    import tritonclient.http as th

    x = normalize(bundle.subset().images[:1])
    client = th.InferenceServerClient(server.http_address)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    inp = th.InferInput("input", [1, 1, 28, 28], "FP32")
    inp.set_data_from_numpy(x.numpy())
    result = client.infer(MODEL, [inp], parameters={"slo_ms": 200})
    params = result.get_response()["parameters"]
    np.testing.assert_allclose(result.as_numpy("logits")[0], local_logits(bundle, params["subnet_id"], x)[0],
                               rtol=1e-4, atol=1e-4)
    assert result.as_numpy("class_index")[0, 0] == result.as_numpy("logits")[0].argmax()


def test_tritonclient_grpc_round_trip(server, bundle):
    import tritonclient.grpc as tg

    x = normalize(bundle.subset().images[1:2])
    client = tg.InferenceServerClient(server.grpc_address)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    assert client.get_model_config(MODEL, as_json=True)["config"]["max_batch_size"] > 0
    assert client.get_model_metadata(MODEL, as_json=True)["inputs"][0]["datatype"] == "FP32"
    inp = tg.InferInput("input", [1, 1, 28, 28], "FP32")
    inp.set_data_from_numpy(x.numpy())
    # tritonclient.grpc cannot send float parameters: numeric strings and ints are accepted.
    result = client.infer(MODEL, [inp], parameters={"slo_ms": "200", "min_accuracy": 0})
    params = {k: v for k, v in result.get_response(as_json=True)["parameters"].items()}
    subnet = params["subnet_id"]["string_param"]
    np.testing.assert_allclose(result.as_numpy("logits")[0], local_logits(bundle, subnet, x)[0],
                               rtol=1e-4, atol=1e-4)
    assert params["outcome"]["string_param"] in ("in_time", "late")


# --- concurrency: both workers serve ---------------------------------------------------------
def test_two_workers_serve_concurrently(server, bundle):
    x = normalize(bundle.subset().images[:64]).numpy()

    async def burst():
        async with aiohttp.ClientSession() as s:
            async def one(i):
                req, headers = binary_request(x[i], slo_ms=2000)
                async with s.post(f"{server.http_url}/v2/models/{MODEL}/infer", data=req, headers=headers) as r:
                    body = await r.read()
                    n = int(r.headers["Inference-Header-Content-Length"])
                    return r.status, json.loads(body[:n])["parameters"]
            return await asyncio.gather(*(one(i) for i in range(len(x))))

    results = asyncio.run(burst())
    assert all(status == 200 for status, _ in results)
    assert {p["worker"] for _, p in results} == {0, 1}
    assert max(p["batch_size"] for _, p in results) > 1  # a burst is batched


# --- deadlines -------------------------------------------------------------------------------
def test_impossible_deadline_is_shed_at_once(server, bundle):
    x = normalize(bundle.subset().images[:1]).numpy()
    status, _, body = http(server, "POST", f"/v2/models/{MODEL}/infer", json_request(x, slo_ms=0.01))
    assert status == 504
    out = json.loads(body)
    assert out["outcome"] == "shed" and "deadline cannot be met" in out["error"]

    import tritonclient.grpc as tg
    from tritonclient.utils import InferenceServerException

    inp = tg.InferInput("input", [1, 1, 28, 28], "FP32")
    inp.set_data_from_numpy(x.reshape(1, 1, 28, 28))
    with pytest.raises(InferenceServerException) as err:
        tg.InferenceServerClient(server.grpc_address).infer(MODEL, [inp], parameters={"slo_ms": "0.01"})
    assert err.value.status() == "StatusCode.DEADLINE_EXCEEDED"


# --- bad input -------------------------------------------------------------------------------
BAD_REQUESTS = [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "not valid JSON"),
    (json.dumps({"inputs": []}).encode(), 400, "exactly one"),
    (json_request(np.zeros(784), shape=(1, 1, 28, 27)), 400, "shape"),
    (json_request(np.zeros(784), shape=(4, 1, 28, 28)), 400, "one image per request"),
    (json_request(np.zeros(784), datatype="FP64"), 400, "datatype"),
    (json_request(np.zeros(700)), 400, "700 values"),
    (json_request(np.full(784, np.nan)), 400, "NaN"),
    (json_request(np.full(784, 300), datatype="UINT8"), 400, "0..255"),
    (json_request(np.zeros(784), slo_ms=-5), 400, "slo_ms"),
    (json_request(np.zeros(784), slo_ms=1e12), 400, "slo_ms"),
    (json_request(np.zeros(784), slo_ms="soon"), 400, "slo_ms"),
    (json_request(np.zeros(784), min_accuracy=3), 400, "min_accuracy"),
    (json.dumps({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 784],
                             "data": [0] * 784}]}).encode(), 400, "unknown input"),
    (json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784], "data": [0] * 784}],
                 "outputs": [{"name": "probabilities"}]}).encode(), 400, "unknown output"),
    (b"x" * (2 << 20), 413, "larger than"),
]


@pytest.mark.parametrize("body,status,words", BAD_REQUESTS, ids=[w for _, _, w in BAD_REQUESTS])
def test_bad_input_gets_4xx_naming_the_problem(server, body, status, words):
    got, _, answer = http(server, "POST", f"/v2/models/{MODEL}/infer", body, {"Content-Type": "application/json"})
    assert got == status, answer
    assert words in json.loads(answer)["error"]


def test_bad_binary_and_unknown_model_then_still_serving(server):
    raw = np.zeros(784, "<f4").tobytes()
    head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784],
                                   "parameters": {"binary_data_size": 3136}}]}).encode()
    truncated = head + raw[:1000]
    status, _, body = http(server, "POST", f"/v2/models/{MODEL}/infer", truncated,
                           {"Inference-Header-Content-Length": str(len(head))})
    assert status == 400 and "binary_data_size" in json.loads(body)["error"]
    status, _, _ = http(server, "POST", f"/v2/models/{MODEL}/infer", head + raw,
                        {"Inference-Header-Content-Length": "999999"})
    assert status == 400
    assert http(server, "POST", "/v2/models/resnet/infer", json_request(np.zeros(784)))[0] == 404

    import tritonclient.grpc as tg
    from tritonclient.utils import InferenceServerException

    client = tg.InferenceServerClient(server.grpc_address)
    inp = tg.InferInput("input", [1, 784], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 784), np.float32))
    for name, params, code in [("nope", {}, "NOT_FOUND"), (MODEL, {"slo_ms": "nan"}, "INVALID_ARGUMENT"),
                               (MODEL, {"slo_ms": -1}, "INVALID_ARGUMENT")]:
        with pytest.raises(InferenceServerException) as err:
            client.infer(name, [inp], parameters=params)
        assert err.value.status() == f"StatusCode.{code}"
    bad = tg.InferInput("input", [1, 783], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 783), np.float32))
    with pytest.raises(InferenceServerException) as err:
        client.infer(MODEL, [bad])
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT" and "shape" in err.value.message()

    huge = tg.InferInput("input", [1, 600_000], "FP32")  # 2.4 MB > the 1 MiB request limit
    huge.set_data_from_numpy(np.zeros((1, 600_000), np.float32))
    with pytest.raises(InferenceServerException) as err:
        client.infer(MODEL, [huge])
    assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED"

    # ... and the server keeps serving.
    assert client.infer(MODEL, [inp]).as_numpy("logits").shape == (1, 10)
    assert http(server, "POST", f"/v2/models/{MODEL}/infer", json_request(np.zeros(784)))[0] == 200


# --- metrics ---------------------------------------------------------------------------------
def test_metrics_count_outcomes(server):
    status, _, body = http(server, "GET", "/metrics")
    text = body.decode()
    assert status == 200
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values['superserve_requests_total{outcome="in_time"}'] + \
        values['superserve_requests_total{outcome="late"}'] > 0
    assert values['superserve_requests_total{outcome="shed"}'] >= 2  # the impossible deadlines
    assert values['superserve_workers{state="ready"}'] == 2
    assert values["superserve_batch_size_count"] > 0 and values["superserve_compute_ms_count"] > 0
    assert values['superserve_invalid_requests_total{status="400"}'] >= len(BAD_REQUESTS) - 1
    assert "superserve_queue_length" in values and "superserve_served_accuracy_count" in values
