"""superserve.Client / AsyncClient end to end: real servers, each status produced for real and
mapped to its exception, over REST and gRPC, blocking and asyncio.

Two servers (3 served SubNets each and no start-up profile check, so they start fast):
``server`` (1 worker, a bearer token, a 2-request queue, JSON logs) for answers and refusals,
and one with TLS, 2 workers, no restarts and the test crash hook for 500 and 503, which end
its usefulness.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import psutil
import pytest

import superserve
from superserve.bundle_layout import EMBEDDED_DIR, BundleLayout
from superserve.client import (AccuracyFloorUnmet, AsyncClient, BadRequest, Client, ConnectionFailed, NotFound,
                               Overloaded, Prediction, RequestShed, ServerError, SuperserveError, Timeout,
                               Unauthorized, Unavailable)
from superserve.scheduling.profile import LatencyProfile
from superserve.serving import ServerProcess

BUNDLE = os.environ.get("SUPERSERVE_BUNDLE", str(EMBEDDED_DIR))
TOKEN = "client-test-token"
CRASH = 1234.5  # the fragile server's workers die on an input whose first value is this
MODES = [("http", False), ("http", True), ("grpc", False), ("grpc", True)]
IDS = ["rest-sync", "rest-async", "grpc-sync", "grpc-async"]


def served_subnets() -> list[str]:
    """The least, a middle and the most accurate SubNet of the bundle's profile."""
    subnets = sorted(LatencyProfile.load(BundleLayout(BUNDLE).profile).subnets, key=lambda s: s.accuracy)
    return [subnets[0].id, subnets[len(subnets) // 2].id, subnets[-1].id]


@pytest.fixture(scope="module")
def server():
    with ServerProcess(bundle=BUNDLE, subnets=served_subnets(), workers=1, warmup_runs=1, calibration_check_s=0,
                       auth_token=TOKEN, queue_capacity=2, log_format="json") as srv:
        yield srv
    assert srv.proc.returncode == 0, srv.log_tail()


class Caller:
    """One of the four clients (REST or gRPC, blocking or asyncio) behind one blocking call."""

    def __init__(self, url: str, is_async: bool, **settings: Any) -> None:
        self.url, self.is_async, self.settings = url, is_async, settings

    def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if not self.is_async:
            with Client(self.url, **self.settings) as client:
                return getattr(client, method)(*args, **kwargs)

        async def call() -> Any:
            async with AsyncClient(self.url, **self.settings) as client:
                return await getattr(client, method)(*args, **kwargs)
        return asyncio.run(call())

    def burst(self, image: np.ndarray, n: int, **kwargs: Any) -> list[Any]:
        """``n`` concurrent infer calls on one client: each answer or exception."""
        if not self.is_async:
            with Client(self.url, **self.settings) as client, ThreadPoolExecutor(n) as pool:
                futures = [pool.submit(client.infer, image, **kwargs) for _ in range(n)]
                return [f.exception() or f.result() for f in futures]

        async def run() -> list[Any]:
            async with AsyncClient(self.url, **self.settings) as client:
                return await asyncio.gather(*(client.infer(image, **kwargs) for _ in range(n)),
                                            return_exceptions=True)
        return asyncio.run(run())


def url_of(srv: ServerProcess, scheme: str) -> str:
    if scheme == "http":
        return srv.http_url
    return f"{'grpcs' if srv.config.tls else 'grpc'}://{srv.grpc_address}"


@pytest.fixture(params=MODES, ids=IDS)
def mode(request) -> tuple[str, bool]:
    return request.param


@pytest.fixture
def caller(server, mode) -> Caller:
    scheme, is_async = mode
    return Caller(url_of(server, scheme), is_async, token=TOKEN)


@pytest.fixture(scope="module")
def labelled() -> tuple[np.ndarray, np.ndarray, int, dict[str, np.ndarray]]:
    """A test image every served SubNet classifies right, as raw uint8 pixels [28, 28] and as
    the normalised float32 input [1, 28, 28]; its label; each served SubNet's logits for it,
    computed here with the bundle's own model."""
    import torch

    from superserve.datasets import normalize
    from superserve.embedded import load_bundle

    bundle = load_bundle(BUNDLE)
    split = bundle.subset()
    x = normalize(split.images[:32])
    with torch.inference_mode():
        logits = {}
        for sid in served_subnets():
            bundle.model.actuate(sid)
            logits[sid] = bundle.model(x).numpy()
    right = np.all([logits[s].argmax(1) == split.labels[:32].numpy() for s in logits], axis=0)
    i = int(np.flatnonzero(right)[0])
    return split.images[i].numpy(), x[i].numpy(), int(split.labels[i]), {s: v[i] for s, v in logits.items()}


def accuracy_of(subnet_id: str) -> float:
    return LatencyProfile.load(BundleLayout(BUNDLE).profile).by_id(subnet_id).accuracy


# --- answers ----------------------------------------------------------------------------------
def test_a_prediction_names_what_served_it_and_is_right(caller, labelled):
    pixels, normalised, label, logits = labelled
    for image in (pixels, normalised):  # raw uint8 pixels (the server normalises), float32 input
        p = caller("infer", image, slo_ms=2000)
        assert isinstance(p, Prediction)
        assert p.class_index == label == int(p.logits.argmax())
        assert p.subnet_id in logits
        np.testing.assert_allclose(p.logits, logits[p.subnet_id], rtol=1e-4, atol=1e-4)
        assert p.accuracy == accuracy_of(p.subnet_id)
        assert p.outcome in ("in_time", "late") and p.batch_size >= 1 and p.worker == 0
        assert p.compute_ms > 0 and p.queue_ms >= 0 and p.latency_ms > 0 and p.accuracy_floor_met


def test_health_and_metadata(caller):
    assert caller("server_ready") and caller("server_live")
    meta = caller("model_metadata")
    assert meta["name"] == "supernet" and meta["inputs"][0]["name"] == "input"
    assert [o["name"] for o in meta["outputs"]] == ["logits", "class_index"]


def test_the_accuracy_floor_is_honoured_or_refused(caller, labelled):
    best = max(accuracy_of(s) for s in served_subnets())
    p = caller("infer", labelled[0], slo_ms=5000, min_accuracy=best, strict=True)
    assert p.accuracy == best and p.accuracy_floor_met
    with pytest.raises(AccuracyFloorUnmet) as err:
        caller("infer", labelled[0], slo_ms=5000, min_accuracy=0.999, strict=True)
    assert err.value.outcome == "floor_unmet" and "min_accuracy" in err.value.message


# --- refusals ---------------------------------------------------------------------------------
def test_a_deadline_that_cannot_be_met_is_shed(caller, labelled):
    with pytest.raises(RequestShed) as err:
        caller("infer", labelled[0], slo_ms=0.01)
    assert err.value.outcome == "shed" and err.value.status in (504, None) and err.value.code in ("DEADLINE_EXCEEDED",
                                                                                                   None)


def test_a_full_queue_is_overloaded(caller, labelled):
    answers: list[Any] = []
    for _ in range(5):  # a burst of 24 on a 2-request queue; again if the worker kept up
        answers = caller.burst(labelled[0], 24, slo_ms=10_000)
        if any(isinstance(a, Overloaded) for a in answers):
            break
    assert any(isinstance(a, Overloaded) for a in answers), answers
    assert all(isinstance(a, (Prediction, Overloaded)) for a in answers), answers
    rejected = next(a for a in answers if isinstance(a, Overloaded))
    assert rejected.outcome == "rejected" and "queue full" in rejected.message


def test_bad_input_is_a_bad_request(caller, labelled):
    with pytest.raises(BadRequest, match="NaN"):
        caller("infer", np.full((1, 28, 28), np.nan, dtype=np.float32))
    with pytest.raises(BadRequest, match="slo_ms"):
        caller("infer", labelled[0], slo_ms=-1)


def test_no_token_is_unauthorized(server, mode, labelled):
    scheme, is_async = mode
    anonymous = Caller(url_of(server, scheme), is_async)
    with pytest.raises(Unauthorized):
        anonymous("infer", labelled[0])
    with pytest.raises(Unauthorized):
        Caller(url_of(server, scheme), is_async, token="wrong")("model_metadata")
    assert anonymous("server_ready")  # health stays open for probes


def test_an_unknown_model_is_not_found(server, mode, labelled):
    scheme, is_async = mode
    other = Caller(url_of(server, scheme), is_async, token=TOKEN, model="nope")
    with pytest.raises(NotFound, match="nope"):
        other("infer", labelled[0])
    with pytest.raises(NotFound):
        other("model_metadata")


def test_one_connection_serves_many_calls(server, mode, labelled):
    """Calls on one client reuse its connection (REST keep-alive; gRPC: one HTTP/2 channel)."""
    scheme, is_async = mode
    port = int(url_of(server, scheme).rsplit(":", 1)[1])

    def connections() -> set[int]:
        """The local ports of this process's open connections to the server."""
        return {c.laddr.port for c in psutil.Process().net_connections("tcp")
                if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED}

    if not is_async:
        with Client(url_of(server, scheme), token=TOKEN) as client:
            client.infer(labelled[0])
            first = connections()
            for _ in range(4):
                client.infer(labelled[0])
            assert len(first) == 1 and connections() == first

    async def calls() -> None:
        async with AsyncClient(url_of(server, scheme), token=TOKEN) as client:
            await client.infer(labelled[0])
            first = connections()
            for _ in range(4):
                await client.infer(labelled[0])
            assert len(first) == 1 and connections() == first
    if is_async:
        asyncio.run(calls())


# --- no answer --------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme,is_async", MODES, ids=IDS)
def test_a_silent_server_is_a_timeout(scheme, is_async, labelled):
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"{scheme}://127.0.0.1:{silent.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(Timeout) as err:  # the call's own timeout overrides the client's
            Caller(url, is_async, timeout_s=60)("infer", labelled[0], timeout_s=0.5)
    assert isinstance(err.value, TimeoutError) and time.monotonic() - t0 < 30


@pytest.mark.parametrize("scheme,is_async", MODES, ids=IDS)
def test_nobody_listening_is_a_connection_failure(scheme, is_async, labelled):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed
    with pytest.raises(ConnectionFailed) as err:
        Caller(f"{scheme}://127.0.0.1:{port}", is_async, timeout_s=5)("infer", labelled[0])
    assert isinstance(err.value, ConnectionError)


# --- 500 and 503, with TLS ----------------------------------------------------------------------
def test_server_error_then_unavailable_over_tls(tls_pair, labelled):
    """A poison input crashes one of two workers and is answered 500 (ServerError: one death
    per request allowed here); the server remembers it, so every client gets 500 for it at
    once. A second one kills the last worker (500 again); then every request is answered 503
    (Unavailable), and the server reports neither ready nor live (no restarts)."""
    cert, key = (str(p) for p in tls_pair)
    with ServerProcess(bundle=BUNDLE, subnets=served_subnets(), workers=2, warmup_runs=0, calibration_check_s=0,
                       restart=False, request_max_deaths=1, inject_crash_value=CRASH, tls_cert=cert,
                       tls_key=key) as srv:
        callers = [Caller(url_of(srv, scheme), is_async, ca_file=cert) for scheme, is_async in MODES]
        with pytest.raises(ConnectionFailed):  # a certificate nobody vouched for
            Caller(url_of(srv, "http"), False)("server_ready")
        poison = np.zeros((1, 28, 28), dtype=np.float32)
        poison[0, 0, 0] = CRASH
        for call in callers:
            with pytest.raises(ServerError) as err:
                call("infer", poison, slo_ms=10_000)
            assert err.value.outcome == "error" and err.value.status in (500, None), err.value
        poison[0, 0, 1] = 1.0  # another input: not remembered, so it runs and kills the last worker
        with pytest.raises(ServerError):
            callers[3]("infer", poison, slo_ms=10_000)
        for call in callers:
            with pytest.raises(Unavailable) as err:
                call("infer", labelled[0], slo_ms=10_000)
            assert err.value.outcome == "unavailable"
            assert not call("server_ready") and not call("server_live")
    assert srv.proc.returncode == 0, srv.log_tail()


# --- the client library itself -------------------------------------------------------------------
def test_every_exception_is_a_superserve_error():
    for cls in (RequestShed, Overloaded, Unavailable, AccuracyFloorUnmet, BadRequest, Unauthorized, NotFound,
                ServerError, Timeout, ConnectionFailed):
        assert issubclass(cls, SuperserveError)


@pytest.mark.parametrize("url", ["ftp://h:1", "http://h:1/v2/models", "http://:8000", "http://h:99999"])
def test_a_bad_url_is_refused_at_once(url):
    with pytest.raises(ValueError):
        Client(url)


def test_importing_the_client_loads_no_torch_no_server_and_no_inference_protos():
    """``superserve.Client`` works in a process that also imports tritonclient.grpc (whose
    protobuf package has the same name as the server's generated module)."""
    code = """
import sys, superserve
import tritonclient.grpc
client = superserve.Client("grpc://127.0.0.1:1")
heavy = [m for m in ("torch", "superserve.serving.server", "superserve.serving.router", "superserve.serving.grpc_api",
                     "superserve.serving.protos.inference_pb2") if m in sys.modules]
print(heavy)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
    assert superserve.Client is Client and superserve.AsyncClient is AsyncClient


def test_the_server_log_is_json_lines(server):
    """Run last on ``server``: every line it wrote is one JSON object with a timestamp,
    level and message; the lifecycle ones carry their event's fields."""
    lines = server.log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert records and all({"ts", "level", "logger", "msg"} <= r.keys() for r in records)
    assert any(r.get("event") == "server_ready" for r in records) or any("ready in" in r["msg"] for r in records)
