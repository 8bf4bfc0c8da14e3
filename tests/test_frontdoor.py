"""The front door (`superserve serve --frontends N`, docs/frontdoor.md): REST front-end
processes passing decoded requests to the scheduler over Unix stream sockets.

A real server with two front ends on the embedded bundle (Clipper+ on one SubNet, so a
single-process server given the same inputs must give the same classes), real clients;
and :meth:`Router.submit`, the lean intake, on a fake pool.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request

import aiohttp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from superserve.embedded import EMBEDDED_DIR
from superserve.outcome import Outcome
from superserve.scheduling.profile import LatencyProfile
from superserve.serving import ServerProcess, wire
from superserve.serving.messages import BatchDone

BUNDLE = os.environ.get("SUPERSERVE_BUNDLE", str(EMBEDDED_DIR))
MODEL = "supernet"
MAX_BODY = 64 * 1024


def _settings() -> dict:
    subnet = LatencyProfile.load(os.path.join(BUNDLE, "profile.json")).largest.id
    return dict(bundle=BUNDLE, workers=1, warmup_runs=1, calibration_check_s=0, policy="clipper+",
                subnet=subnet, max_request_bytes=MAX_BODY, grpc_port=0)


@pytest.fixture(scope="module")
def server():
    with ServerProcess(frontends=2, **_settings()) as srv:
        yield srv
    assert srv.proc.returncode == 0, srv.log_tail()  # SIGTERM: graceful, exit 0
    time.sleep(0.2)
    for pid in srv.info["frontend_pids"]:  # stopped with the server
        assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or reaped between open and read
        return False


def http(url: str, path: str, body: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url + path, data=body, method="POST" if body is not None else "GET",
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def json_body(image: np.ndarray, shape=(1, 1, 28, 28), **params) -> bytes:
    body: dict = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(shape),
                              "data": image.reshape(-1).tolist()}]}
    if params:
        body["parameters"] = params
    return json.dumps(body).encode()


def binary_body(image: np.ndarray) -> tuple[bytes, dict]:
    raw = np.ascontiguousarray(image, dtype="<f4").tobytes()
    head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28],
                                   "parameters": {"binary_data_size": len(raw)}}],
                       "outputs": [{"name": "class_index"}], "parameters": {"slo_ms": 2000}}).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head)),
                        "Content-Type": "application/octet-stream"}


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 1, 1, 28, 28)).astype("<f4")


def classes(url: str, imgs: np.ndarray) -> list[int]:
    out = []
    for img in imgs:
        status, body = http(url, f"/v2/models/{MODEL}/infer", json_body(img, slo_ms=2000))
        assert status == 200, body
        reply = json.loads(body)
        out.append(next(o["data"][0] for o in reply["outputs"] if o["name"] == "class_index"))
    return out


# --- end to end --------------------------------------------------------------------------------
def test_health_metadata_and_tritonclient(server):
    import tritonclient.http as triton

    url = server.http_url
    for path in ("/v2/health/live", "/v2/health/ready", "/v2", f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/config",
                 f"/v2/models/{MODEL}/ready"):
        assert http(url, path)[0] == 200, path
    assert http(url, "/v2/models/nope")[0] == 404
    client = triton.InferenceServerClient(server.http_address)
    assert client.is_server_ready() and client.is_model_ready(MODEL)
    inp = triton.InferInput("input", [1, 1, 28, 28], "FP32")
    inp.set_data_from_numpy(images(1)[0], binary_data=True)
    res = client.infer(MODEL, [inp], outputs=[triton.InferRequestedOutput("logits", binary_data=True)])
    assert res.as_numpy("logits").shape == (1, 10)
    assert res.get_response()["parameters"]["outcome"] == "in_time"


def test_grpc_is_served_by_the_front_ends_with_the_same_answers(server):
    import tritonclient.grpc as tg
    from tritonclient.utils import InferenceServerException

    client = tg.InferenceServerClient(server.grpc_address)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    assert client.get_model_metadata(MODEL, as_json=True)["name"] == MODEL
    imgs = images(6, seed=5)
    got = []
    for img in imgs:
        inp = tg.InferInput("input", [1, 1, 28, 28], "FP32")
        inp.set_data_from_numpy(img)
        res = client.infer(MODEL, [inp], parameters={"slo_ms": "2000"})
        assert res.get_response(as_json=True)["parameters"]["outcome"]["string_param"] == "in_time"
        got.append(int(res.as_numpy("class_index").reshape(-1)[0]))
    assert got == classes(server.http_url, imgs)  # the same model answers both protocols
    bad = tg.InferInput("input", [1, 3, 28, 28], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3, 28, 28), np.float32))
    with pytest.raises(InferenceServerException, match="shape"):
        client.infer(MODEL, [bad])
    inp = tg.InferInput("input", [1, 1, 28, 28], "FP32")
    inp.set_data_from_numpy(imgs[0])
    assert client.infer(MODEL, [inp], parameters={"slo_ms": "2000"}).as_numpy("logits").shape == (1, 10)


def test_same_classes_as_single_process(server):
    imgs = images(12, seed=1)
    split = classes(server.http_url, imgs)
    with ServerProcess(frontends=0, **_settings()) as single:
        assert classes(single.http_url, imgs) == split


def test_bad_input_gets_4xx_and_others_are_served(server):
    url, path = server.http_url, f"/v2/models/{MODEL}/infer"
    good = json_body(images(1)[0], slo_ms=2000)
    bad = [
        (json_body(np.zeros((1, 3, 28, 28), "f4"), shape=(1, 3, 28, 28)), 400),  # wrong shape
        (b'{"inputs": [', 400),  # bad JSON
        (b"[1, 2]", 400),  # not an object
        (json_body(np.full((1, 1, 28, 28), np.nan, "f4")), 400),  # NaN
        (json_body(images(1)[0], slo_ms=-1), 400),  # bad deadline
        (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784], "data": [' + b"0.5, " * 20000
         + b"0.5]}]}", 413),  # oversized body
    ]
    for body, status in bad:
        got, text = http(url, path, body)
        assert got == status, (got, text[:200])
        assert "error" in json.loads(text)
        assert http(url, path, good)[0] == 200  # still serving
    raw, headers = binary_body(images(1)[0])
    headers["Inference-Header-Content-Length"] = "7"
    assert http(url, path, raw, headers)[0] == 400  # binary header length lies


def test_many_concurrent_requests_all_answered(server):
    n = 400
    imgs = images(8, seed=2)
    bodies = [binary_body(img) for img in imgs]

    async def run() -> list[int]:
        conn = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as s:
            async def one(i: int) -> int:
                body, headers = bodies[i % len(bodies)]
                async with s.post(f"{server.http_url}/v2/models/{MODEL}/infer", data=body, headers=headers) as r:
                    await r.read()
                    return r.status
            return await asyncio.gather(*(one(i) for i in range(n)))

    statuses = asyncio.run(run())
    assert len(statuses) == n  # sent == answered
    assert set(statuses) <= {200, 429, 503, 504}, set(statuses)
    assert statuses.count(200) >= 0.9 * n, {s: statuses.count(s) for s in set(statuses)}


def test_killed_frontend_is_restarted_and_the_other_serves(server):
    url, path = server.http_url, f"/v2/models/{MODEL}/infer"
    victim = server.info["frontend_pids"][0]
    os.kill(victim, signal.SIGKILL)
    gone = time.monotonic() + 5
    while _alive(victim) and time.monotonic() < gone:  # its listener closes as it exits
        time.sleep(0.005)
    body = json_body(images(1)[0], slo_ms=2000)
    ok, resets = 0, 0
    for _ in range(20):  # fresh connections: the kernel sends them to the live front ends
        try:
            status, _ = http(url, path, body)
        except (ConnectionError, urllib.error.URLError):
            # Seen about once in ten runs on a loaded 2-core machine, not reproduced alone: a
            # connection reset around the death / restart (SO_REUSEPORT moves no queued
            # connection between listeners). A client retries a reset; at most one here.
            resets += 1
            status, _ = http(url, path, body)
        ok += status == 200
    assert ok == 20 and resets <= 1, (ok, resets)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ev = server.events()
        died = [e for e in ev if e["event"] == "frontend_died" and e.get("pid") == victim]
        back = [e for e in ev if e["event"] == "frontend_ready" and e.get("restarted") and e.get("frontend") == 0]
        if died and back:
            assert _alive(back[-1]["pid"])
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"front end 0 not restarted: {server.events()[-5:]}\n{server.log_tail()}")
    assert classes(url, images(4, seed=3))  # serving on both again


def test_hot_reload_replaces_the_front_ends_one_at_a_time(server, tmp_path):
    import shutil
    import threading

    new = shutil.copytree(BUNDLE, tmp_path / "second")
    data = json.loads((new / "profile.json").read_text())
    keep = {LatencyProfile.load(os.path.join(BUNDLE, "profile.json")).largest.id, data["subnets"][0]["id"]}
    data["subnets"] = [s for s in data["subnets"] if s["id"] in keep]
    (new / "profile.json").write_text(json.dumps(data))
    statuses: list[int] = []
    stop = threading.Event()

    def stream() -> None:  # fresh connections all along: every one must be served
        body = json_body(images(1)[0], slo_ms=2000)
        while not stop.is_set():
            statuses.append(http(server.http_url, f"/v2/models/{MODEL}/infer", body)[0])
            time.sleep(0.02)

    t = threading.Thread(target=stream)
    t.start()
    try:
        admin = f"http://127.0.0.1:{server.info['scheduler_http_port']}"
        status, body = http(admin, "/v2/admin/reload", json.dumps({"bundle": str(new)}).encode(),
                            {"Content-Type": "application/json"})
        assert status == 200, body
        deadline = time.monotonic() + 60
        while len([e for e in server.events() if e["event"] == "frontend_replaced"]) < 2:
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.1)
        time.sleep(0.3)
    finally:
        stop.set()
        t.join(30)
    assert statuses and all(s == 200 for s in statuses), statuses
    for _ in range(4):  # both front ends serve the new bundle's metadata
        meta = json.loads(http(server.http_url, f"/v2/models/{MODEL}")[1])
        assert meta["parameters"]["subnets"] == 2


def _injector(srv) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(srv.info["frontdoor_endpoint"])
    return s


def _answers(s: socket.socket, n: int) -> list[int]:
    reader, outcomes = wire.MessageReader(), []
    while len(outcomes) < n:
        data = s.recv(1 << 20)
        assert data, "connection closed"
        for frames in reader.feed(data):
            if frames[0] == wire.ANSWERS:
                outcomes += [rec[1] for rec in wire.ANSWER.iter_unpack(frames[1])]
    return outcomes


def test_injected_records_are_answered_and_broken_peers_are_dropped(server):
    row = images(1)[0].tobytes()
    good = _injector(server)
    good.sendall(wire.pack([wire.HELLO_KIND, wire.HELLO.pack(wire.INJECTOR, 0, os.getpid())]))
    now = time.monotonic()
    head = b"".join(wire.REQUEST.pack(i, now, 5000.0, 0.0, 0, len(row)) for i in range(3))
    head += wire.REQUEST.pack(3, now, 5000.0, 0.0, 0, 7)  # a row of the wrong size: an error answer
    good.sendall(wire.pack([wire.REQUESTS, head, row * 3 + b"x" * 7]))
    outcomes = _answers(good, 4)
    assert sorted(outcomes) == sorted([Outcome.IN_TIME.value] * 3 + [Outcome.ERROR.value])
    # a peer that breaks the framing, and one that claims to be a front end it is not: disconnected
    for junk in (wire.MSG.pack(wire.MAX_MESSAGE_BYTES + 1, 1),
                 wire.pack([wire.HELLO_KIND, wire.HELLO.pack(0, 99, os.getpid())])):
        bad = _injector(server)
        bad.sendall(junk)
        assert bad.recv(1024) == b""
        bad.close()
    # the server keeps serving, over HTTP and the good connection
    assert http(server.http_url, f"/v2/models/{MODEL}/infer", json_body(images(1)[0], slo_ms=2000))[0] == 200
    good.sendall(wire.pack([wire.REQUESTS, wire.REQUEST.pack(9, time.monotonic(), 5000.0, 0.0, 0, len(row)), row]))
    assert _answers(good, 1) == [Outcome.IN_TIME.value]
    good.close()


def test_sigterm_answers_requests_in_flight(server):
    """Last of the module's server tests: SIGTERM while requests are in flight; each gets
    its answer (200, or 503 once draining ends), the server exits 0 (the fixture checks)."""
    imgs = images(4, seed=4)
    bodies = [binary_body(img) for img in imgs]
    n = 48

    async def run() -> list:
        conn = aiohttp.TCPConnector(limit=n)
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as s:
            async def one(i: int) -> int:
                body, headers = bodies[i % len(bodies)]
                async with s.post(f"{server.http_url}/v2/models/{MODEL}/infer", data=body, headers=headers) as r:
                    await r.read()
                    return r.status

            tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
            await asyncio.sleep(0.05)
            os.kill(server.pid, signal.SIGTERM)
            return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(run())
    assert all(r in (200, 503) for r in results), results
    server.proc.wait(20)


# --- the lean intake on a fake pool ----------------------------------------------------------
class _Reply:
    def __init__(self) -> None:
        self.results: list = []

    def done(self) -> bool:
        return bool(self.results)

    def set_result(self, result) -> None:
        self.results.append(result)


def test_submit_answers_each_request_exactly_once(fake_router):
    async def run() -> None:
        router, pool = fake_router(workers=1, queue_capacity=4)
        row = bytes(4 * 28 * 28)
        replies = [_Reply() for _ in range(6)]
        now = time.monotonic()
        reqs = [router.submit(row, 1000.0, 0.0, False, r, now) for r in replies]
        assert sum(r is None for r in reqs) == 2  # beyond capacity: answered at once
        assert all(r.results[0].outcome is Outcome.REJECTED for r, q in zip(replies, reqs) if q is None)
        router.cancel(reqs[1])  # its client went away: slot freed
        await asyncio.sleep(0)  # the pump
        while pool.runs:
            w, msg, _ = pool.runs.pop()
            router.batch_done(pool.workers[w], BatchDone(msg.seq, 1.0))
            await asyncio.sleep(0)
        served = [r for r, q in zip(replies, reqs) if q is not None and q is not reqs[1]]
        assert all(len(r.results) == 1 and r.results[0].outcome is Outcome.IN_TIME for r in served)
        assert all(len(r.results) <= 1 for r in replies)
        router.stop_intake()
        late = _Reply()
        assert router.submit(row, 1000.0, 0.0, False, late, now) is None
        assert late.results[0].outcome is Outcome.UNAVAILABLE

    asyncio.run(run())


def test_observe_many_matches_observe():
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from superserve.serving.metrics import observe_many, observe_same

    def samples(r):  # every sample but the creation time
        return [line for line in generate_latest(r).decode().splitlines() if "_created" not in line]

    values = [0.1, 0.25, 0.3, 2.0, 7.5, 9.9, 1e9, 0.0]
    for batch in (values, [0.25] * 5, [7.6] * 3, [3.0]):
        one, many, same = CollectorRegistry(), CollectorRegistry(), CollectorRegistry()
        h1, h2, h3 = (Histogram("h", "h", buckets=(0.25, 1, 7.5, 10), registry=r) for r in (one, many, same))
        for v in batch:
            h1.observe(v)
        observe_many(h2, batch)
        assert samples(one) == samples(many)
        if len(set(batch)) == 1:
            observe_same(h3, batch[0], len(batch))
            assert samples(one) == samples(same)


# --- the wire: framing, and a peer that breaks it ----------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.binary(max_size=300), min_size=1, max_size=wire.MAX_FRAMES), max_size=8),
       st.lists(st.integers(1, 700), min_size=1, max_size=20))
def test_message_reader_gives_back_what_was_packed_however_the_stream_is_cut(messages, cuts):
    stream = b"".join(wire.pack(m) for m in messages)
    reader, got, pos, i = wire.MessageReader(), [], 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        got += reader.feed(stream[pos:pos + step])
        pos, i = pos + step, i + 1
    assert got == messages and not reader.parts  # nothing held back


@pytest.mark.parametrize("junk", [
    wire.MSG.pack(wire.MAX_MESSAGE_BYTES + 1, 1),  # over the bound
    wire.MSG.pack(4, 0) + b"\0" * 4,  # no frame
    wire.MSG.pack(4, wire.MAX_FRAMES + 1) + b"\0" * 4,  # too many frames
    wire.MSG.pack(8, 1) + wire.FRAME.pack(100) + b"abcd",  # a frame past the end
    wire.MSG.pack(9, 1) + wire.FRAME.pack(4) + b"abcde",  # frames do not fill it
])
def test_message_reader_refuses_broken_framing(junk):
    with pytest.raises(wire.ProtocolError):
        wire.MessageReader().feed(junk)
