"""Hostile input: over 10,000 generated bad requests (REST JSON and binary bodies, raw HTTP
with wrong lengths and broken framing, gRPC messages and raw protobuf bytes) against one
real server. Every one must get a 4xx / INVALID_ARGUMENT-class answer (never a 5xx, never a
hang), no worker may die, and the server must still answer a good request correctly.

Speed: one server, one event loop in a background thread, keep-alive connections, each
hypothesis example is a list of requests sent concurrently. The server runs with
``late="serve"`` and a large queue, so even a request that happens to be valid is answered
200 (served, maybe late), never 504/429: any 5xx here is a server bug.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import struct
import threading
import urllib.parse
from collections import Counter

import aiohttp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from superserve.embedded import EMBEDDED_DIR
from superserve.serving import ServerProcess

BUNDLE = os.environ.get("SUPERSERVE_BUNDLE", str(EMBEDDED_DIR))
INFER = "/v2/models/supernet/infer"
HCL = "Inference-Header-Content-Length"
PER_EXAMPLE = 25  # requests sent concurrently per example (larger lists overrun hypothesis's buffer)
# Requests per part (examples x PER_EXAMPLE); the total is checked at the end.
REST_EXAMPLES, BYTES_EXAMPLES, RAW_EXAMPLES, GRPC_EXAMPLES = 180, 84, 16, 128
SETTINGS = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck))


class Harness:
    """The server, a loop thread, a keep-alive HTTP session, a gRPC channel, the tallies."""

    def __init__(self, srv: ServerProcess) -> None:
        self.srv = srv
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.statuses: Counter = Counter()
        self.grpc_codes: Counter = Counter()
        self.bad: list[str] = []  # first few 5xx / hangs, for the failure message
        self.session, self.channel = self.run(self._open())

    async def _open(self):
        import grpc
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64),
                                        timeout=aiohttp.ClientTimeout(total=30))
        return session, grpc.aio.insecure_channel(self.srv.grpc_address)

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(300)

    def close(self) -> None:
        async def shut():
            await self.session.close()
            await self.channel.close()
        self.run(shut())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + sum(self.grpc_codes.values())


@pytest.fixture(scope="module", params=[0, 2], ids=["single-process", "frontends-2"])
def harness(request):
    """The single-process server, then one with two front-end processes (REST and gRPC on the
    lean HTTP path and the front ends' gRPC servers; docs/frontdoor.md)."""
    srv = ServerProcess(bundle=BUNDLE, workers=1, warmup_runs=1, late="serve", queue_capacity=4096,
                        read_timeout_s=1.0, frontends=request.param).start()
    h = Harness(srv)
    h.pids = (srv.pid, tuple(srv.worker_pids), tuple(srv.info.get("frontend_pids", ())))
    yield h
    h.close()
    srv.stop()
    assert srv.proc.returncode == 0, srv.log_tail()


# --- strategies ----------------------------------------------------------------------------------
text = st.text(max_size=12)  # any unicode, surrogates included
safe_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)  # encodable as UTF-8
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=24)
# Integers of any size: small, past int64 and float64 (310+ digits: float() overflows), up to the
# 4,300 digits json.dumps still writes (longer literals are sent as raw text, see _huge_literal).
huge_ints = st.integers(min_value=-(2 ** 70), max_value=2 ** 70) | st.integers() | st.integers(
    min_value=-(10 ** 4000), max_value=10 ** 4000) | st.sampled_from([10 ** 309, -(10 ** 309), 2 ** 1024, 10 ** 4200])
floats = st.floats(allow_nan=True, allow_infinity=True)
scalars = st.none() | st.booleans() | huge_ints | floats | text
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(text, c, max_size=4),
                           max_leaves=8)
shapes = st.lists(huge_ints, max_size=6) | st.sampled_from(
    [[1, 784], [784], [1, 1, 28, 28], [2, 784], [0, 784], [-1, 784], [1, -784], [1, 2 ** 62], [1, 28, 28, 1]]) \
    | json_values
datatypes = st.sampled_from(["FP32", "UINT8", "FP64", "INT64", "BYTES", "fp32", "", "UINT8 "]) | text | json_values


def valid_request() -> dict:
    return {"inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 784], "data": [7] * 784}],
            "parameters": {"slo_ms": 1000}, "outputs": [{"name": "class_index"}]}


@st.composite
def bad_data(draw):
    kind = draw(st.sampled_from(["poke", "length", "nested", "any"]))
    if kind == "poke":  # right length, one hostile value
        data = [7] * 784
        data[draw(st.integers(0, 783))] = draw(st.sampled_from(
            [math.nan, math.inf, -math.inf, -1, 256, 3.5, 1e308, "7", None, [], {}, True, 2 ** 70]) | scalars)
        return data
    if kind == "length":
        return [7] * draw(st.sampled_from([0, 1, 783, 785, 1568, 3136]))
    if kind == "nested":
        return [[[7] * 28] * 28] * draw(st.integers(0, 3)) + draw(st.lists(json_values, max_size=2))
    return draw(json_values)


@st.composite
def rest_json_request(draw):
    """A valid request with one or more hostile mutations, as (path, headers, body)."""
    req = valid_request()
    tensor = req["inputs"][0]
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["body", "inputs", "name", "datatype", "shape", "data", "tparams",
                                      "params", "slo", "acc", "strict", "outputs", "extra", "drop"]))
        if where == "body":
            req = draw(json_values)
            break
        if where == "inputs":
            req["inputs"] = draw(json_values | st.lists(st.just(tensor), min_size=0, max_size=3))
        elif where == "name":
            tensor["name"] = draw(text | json_values)
        elif where == "datatype":
            tensor["datatype"] = draw(datatypes)
        elif where == "shape":
            tensor["shape"] = draw(shapes)
        elif where == "data":
            tensor["data"] = draw(bad_data())
        elif where == "tparams":
            tensor["parameters"] = draw(json_values | st.fixed_dictionaries({"binary_data_size": json_values}))
        elif where == "params":
            req["parameters"] = draw(json_values)
        elif where in ("slo", "acc", "strict"):
            key = {"slo": "slo_ms", "acc": "min_accuracy", "strict": "min_accuracy_strict"}[where]
            req.setdefault("parameters", {})
            if isinstance(req["parameters"], dict):
                req["parameters"][key] = draw(scalars | st.sampled_from(
                    ["nan", "inf", "-1", "1e400", "0x10", " 5 ", 0, -0.0, 1e-320, 60001, 2 ** 64, 10 ** 310,
                     -(10 ** 400), "9" * 400, "true", "false", 0.99, 1]) | json_values)
        elif where == "outputs":
            req["outputs"] = draw(json_values | st.lists(st.fixed_dictionaries(
                {"name": text | json_values, "parameters": json_values}), max_size=3))
        elif where == "extra":
            req[draw(text)] = draw(json_values)
        elif where == "drop":
            tensor.pop(draw(st.sampled_from(["name", "datatype", "shape", "data"])), None)
    encoding = draw(st.sampled_from(["ascii", "utf8", "utf16", "latin1-ish"]))
    try:
        raw = json.dumps(req, ensure_ascii=encoding == "ascii", allow_nan=True)
    except ValueError:  # a dict key json cannot express: send the valid one, mutated below
        raw = json.dumps(valid_request())
    if draw(st.integers(0, 7)) == 0:
        raw = _huge_literal(draw, raw)
    if encoding == "utf16":
        body = raw.encode("utf-16")
    else:
        body = raw.encode("utf-8", "surrogatepass")
    return _with_path_and_headers(draw, body)


def _huge_literal(draw, raw: str) -> str:
    """A number literal no json.dumps would write (thousands of digits, exponents past any
    float, nan spelled out) in place of a parameter's value or of the first data value."""
    literal = draw(st.sampled_from(["9" * 310, "-" + "9" * 5000, "1" + "0" * 20000, "1e99999", "-1e-99999",
                                    "NaN", "-Infinity", "0." + "0" * 400 + "1", "1" * 400 + ".5e-400"]))
    for old in ('"slo_ms": 1000', '"min_accuracy": ', '"data": [7'):
        if old in raw:
            new = {'"slo_ms": 1000': f'"slo_ms": {literal}', '"min_accuracy": ': f'"min_accuracy": {literal}, "x": ',
                   '"data": [7': f'"data": [{literal}'}[old]
            return raw.replace(old, new, 1)
    return raw


def _with_path_and_headers(draw, body: bytes, headers: dict | None = None):
    headers = dict(headers or {})
    path = INFER
    if draw(st.integers(0, 9)) == 0:  # hostile model names and versions
        name = urllib.parse.quote(draw(safe_text) or "x", safe="")
        path = draw(st.sampled_from([f"/v2/models/{name}/infer", f"/v2/models/supernet/versions/{name}/infer",
                                     f"/v2/models/{name}", f"/v2/models/{name}/config"]))
    if draw(st.integers(0, 4)) == 0:
        headers["Content-Type"] = draw(st.sampled_from(["application/json", "application/octet-stream",
                                                        "text/plain; charset=utf-16", "multipart/form-data"])
                                       | header_text)
    return path, headers, body


@st.composite
def rest_bytes_request(draw):
    """Byte-level: truncated and padded JSON, random bytes, the binary extension with
    mismatched lengths and hostile float bit patterns."""
    good = json.dumps(valid_request()).encode()
    kind = draw(st.sampled_from(["truncated", "padded", "random", "binary", "binary", "binary"]))
    headers: dict = {}
    if kind == "truncated":
        body = good[:draw(st.integers(0, len(good) - 1))]
    elif kind == "padded":
        body = good + draw(st.binary(min_size=1, max_size=64))
    elif kind == "random":
        body = draw(st.binary(max_size=512))
    else:
        dtype = draw(st.sampled_from(["FP32", "UINT8"]) | datatypes)
        n = draw(st.sampled_from([3136, 784, 3135, 3137, 0, 6272]))
        raw = bytearray(draw(st.binary(min_size=n, max_size=n)) if n <= 784 else bytes(n))
        if n >= 3136 and draw(st.booleans()):  # NaN / inf bit patterns in FP32
            i = draw(st.integers(0, n // 4 - 1))
            raw[4 * i:4 * i + 4] = struct.pack("<f", draw(st.sampled_from([math.nan, math.inf, -math.inf])))
        size = draw(st.sampled_from([n, n + 1, n - 1, -1, 0, 2 ** 40]) | json_values)
        head = json.dumps({"inputs": [{"name": "input", "datatype": dtype, "shape": draw(shapes),
                                       "parameters": {"binary_data_size": size}}]}, allow_nan=True).encode()
        hlen = draw(st.sampled_from([str(len(head)), str(len(head) + 1), str(len(head) - 1), "0", "-5",
                                     str(2 ** 70), "abc", "", " 12", "1e3"]) | header_text)
        headers[HCL] = hlen
        body = head + bytes(raw)
    return _with_path_and_headers(draw, body, headers)


RAW_TEMPLATES = [
    # (request head without the final CRLF, body); {n} is replaced by the body's real length.
    ("POST {p} HTTP/1.1\r\nHost: x\r\nContent-Length: {big}\r\n", "{good}"),  # promises more than it sends
    ("POST {p} HTTP/1.1\r\nHost: x\r\nContent-Length: {small}\r\n", "{good}"),  # rest parsed as a new request
    ("POST {p} HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n", "{good}"),
    ("POST {p} HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n", "{good}"),
    ("POST {p} HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\nContent-Length: 5\r\n", "{good}"),
    ("POST {p} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n", "zz\r\n{good}\r\n0\r\n\r\n"),
    ("POST {p} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: {n}\r\n", "{good}"),
    ("POST {p} HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n" + HCL + ": {big}\r\n", "{good}"),
    ("POST {p} HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n", "{good}"),  # over the size limit
    ("POST {p} HTTP/9.9\r\nHost: x\r\nContent-Length: {n}\r\n", "{good}"),
    ("GARBAGE {p}\r\n", ""),
    ("POST {p} HTTP/1.1\r\nHost: x\r\nX-\xff\xfe: \x00\x01\r\nContent-Length: {n}\r\n", "{good}"),
    ("POST {p} HTTP/1.1\r\nHost: x\r\n" + "X-Pad: " + "a" * 20000 + "\r\n", ""),  # header too long
    ("POST {p} HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\nContent-Type: application/json\r\n", "{trunc}"),
]


@st.composite
def raw_http_request(draw):
    good = json.dumps(valid_request())
    head, body = draw(st.sampled_from(RAW_TEMPLATES))
    body = body.replace("{good}", good).replace("{trunc}", good[:draw(st.integers(0, len(good)))])
    cut = draw(st.integers(0, 3))
    path = INFER if cut else "/v2/models/supernet/infer?" + urllib.parse.quote(draw(safe_text))
    head = head.format(p=path, n=len(body), big=len(body) + draw(st.integers(1, 10 ** 6)),
                       small=max(0, len(body) - draw(st.integers(1, len(body) or 1))))
    data = (head + "\r\n" + body).encode("latin-1", "replace")
    if draw(st.integers(0, 5)) == 0:  # the connection drops mid-request
        return data[:draw(st.integers(1, len(data)))], True
    return data, False


# --- senders -------------------------------------------------------------------------------------
async def send_rest(h: Harness, reqs) -> None:
    async def one(path, headers, body):
        try:
            async with h.session.post(h.srv.http_url + path, data=body, headers=headers) as r:
                await r.read()
                h.statuses[r.status] += 1
                if r.status >= 500:
                    h.bad.append(f"{r.status} for {path} {headers} {body[:300]!r}")
        except asyncio.TimeoutError:
            h.statuses["timeout"] += 1
            h.bad.append(f"no answer in 30 s for {path} {headers} {body[:300]!r}")
    await asyncio.gather(*(one(*r) for r in reqs))


async def send_raw(h: Harness, datas) -> None:
    """Raw bytes on a fresh connection each. A request cut short is sent and the connection
    dropped (the server must just cope); any other must be answered (a stalled body by the
    server's read timeout, 408) or the connection closed by the server, within 5 s."""
    port = h.srv.info["http_port"]

    async def one(data: bytes, drop: bool):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        reply, closed = b"", False
        try:
            writer.write(data)
            await writer.drain()
            if drop:
                h.statuses["dropped"] += 1
                return
            end = asyncio.get_running_loop().time() + 5
            while True:  # read until the server closes, or goes quiet after answering
                quiet = 0.15 if b"HTTP/1." in reply else end - asyncio.get_running_loop().time()
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), max(quiet, 0.01))
                except asyncio.TimeoutError:
                    break
                if not chunk:
                    closed = True
                    break
                reply += chunk
        except (ConnectionError, OSError):
            closed = True
        finally:
            writer.close()
        statuses = [int(line.split()[1]) for line in reply.split(b"\r\n")
                    if line.startswith(b"HTTP/1.") and len(line.split()) > 1 and line.split()[1].isdigit()]
        if not statuses and not closed:
            h.statuses["hang"] += 1
            h.bad.append(f"raw request neither answered nor closed in 5 s: {data[:200]!r}")
        for s in statuses or ["closed"]:
            h.statuses[s] += 1
            if isinstance(s, int) and s >= 500:
                h.bad.append(f"raw {s}: {data[:300]!r} -> {reply[:300]!r}")
    await asyncio.gather(*(one(d, drop) for d, drop in datas))


def test_fuzz_rest_json(harness):
    @settings(max_examples=REST_EXAMPLES, **SETTINGS)
    @given(st.lists(rest_json_request(), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
    def check(reqs):
        before = len(harness.bad)
        harness.run(send_rest(harness, reqs))
        assert len(harness.bad) == before, harness.bad[before:before + 5]
    check()


def test_fuzz_rest_bytes(harness):
    @settings(max_examples=BYTES_EXAMPLES, **SETTINGS)
    @given(st.lists(rest_bytes_request(), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
    def check(reqs):
        before = len(harness.bad)
        harness.run(send_rest(harness, reqs))
        assert len(harness.bad) == before, harness.bad[before:before + 5]
    check()


def test_fuzz_raw_http_framing(harness):
    @settings(max_examples=RAW_EXAMPLES, **SETTINGS)
    @given(st.lists(raw_http_request(), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
    def check(datas):
        before = len(harness.bad)
        harness.run(send_raw(harness, datas))
        assert len(harness.bad) == before, harness.bad[before:before + 5]
    check()


# --- gRPC ----------------------------------------------------------------------------------------
# FAILED_PRECONDITION: a strict accuracy floor no SubNet meets (HTTP 422).
GRPC_OK = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "UNIMPLEMENTED", "FAILED_PRECONDITION"}


@st.composite
def grpc_request(draw):
    """(method, serialized request bytes)."""
    from tritonclient.grpc import service_pb2 as pb  # not superserve's module: see grpc_api's docstring

    kind = draw(st.sampled_from(["infer", "infer", "infer", "meta", "raw"]))
    if kind == "meta":
        method = draw(st.sampled_from(["ModelMetadata", "ModelReady", "ModelConfig"]))
        req = getattr(pb, method + "Request")(name=draw(safe_text), version=draw(safe_text))
        return method, req.SerializeToString()
    good = pb.ModelInferRequest(model_name="supernet")
    good.inputs.add(name="input", datatype="UINT8", shape=[1, 784])
    good.raw_input_contents.append(bytes(784))
    if kind == "raw":  # malformed protobuf: truncated, padded, random
        raw = good.SerializeToString()
        how = draw(st.sampled_from(["truncated", "padded", "random"]))
        if how == "truncated":
            return "ModelInfer", raw[:draw(st.integers(1, len(raw) - 1))]
        if how == "padded":
            return "ModelInfer", raw + draw(st.binary(min_size=1, max_size=32))
        return "ModelInfer", draw(st.binary(max_size=256))
    req = good
    for _ in range(draw(st.integers(1, 3))):
        t = req.inputs[0] if req.inputs else req.inputs.add()
        where = draw(st.sampled_from(["model", "version", "name", "datatype", "shape", "raw", "contents",
                                      "param", "outputs", "inputs", "id"]))
        if where == "model":
            req.model_name = draw(safe_text)
        elif where == "version":
            req.model_version = draw(safe_text)
        elif where == "id":
            req.id = draw(safe_text)
        elif where == "name":
            t.name = draw(safe_text)
        elif where == "datatype":
            t.datatype = draw(st.sampled_from(["FP32", "UINT8", "FP64", "BYTES", ""]) | safe_text)
        elif where == "shape":
            t.shape[:] = draw(st.lists(st.integers(-(2 ** 63), 2 ** 63 - 1), max_size=6)
                              | st.sampled_from([[1, 784], [2, 784], [1, 1, 28, 28], [0], [-1, 784]]))
        elif where == "raw":
            del req.raw_input_contents[:]
            for n in draw(st.lists(st.sampled_from([0, 783, 784, 785, 3136, 3137]), max_size=3)):
                req.raw_input_contents.append(bytes(n) if n != 3136 else
                                              np.full(784, draw(st.sampled_from([np.nan, np.inf, 0.5])), "<f4").tobytes())
        elif where == "contents":
            del req.raw_input_contents[:]
            field = draw(st.sampled_from(["fp32_contents", "uint_contents", "int64_contents", "bool_contents",
                                          "bytes_contents", "fp64_contents"]))
            n = draw(st.sampled_from([0, 1, 784, 785]))
            values = {"fp32_contents": st.floats(width=32, allow_nan=True),
                      "uint_contents": st.integers(0, 2 ** 32 - 1), "int64_contents": st.integers(-(2 ** 63), 2 ** 63 - 1),
                      "bool_contents": st.booleans(), "bytes_contents": st.binary(max_size=4),
                      "fp64_contents": floats}[field]
            fill = draw(values)
            getattr(t.contents, field).extend([fill] * n)
        elif where == "param":
            p = req.parameters[draw(st.sampled_from(["slo_ms", "min_accuracy", "min_accuracy_strict"]) | safe_text)]
            choice = draw(st.sampled_from(["bool", "int", "str", "double"]))
            if choice == "bool":
                p.bool_param = draw(st.booleans())
            elif choice == "int":
                p.int64_param = draw(st.integers(-(2 ** 63), 2 ** 63 - 1))
            elif choice == "str":
                p.string_param = draw(safe_text | st.sampled_from(["nan", "inf", "-inf", "1e999", "25", "9" * 400,
                                                                   "true", "false", "-" + "9" * 5000]))
            else:
                p.double_param = draw(floats)
        elif where == "outputs":
            for name in draw(st.lists(safe_text | st.sampled_from(["logits", "class_index"]), max_size=3)):
                req.outputs.add(name=name)
        elif where == "inputs":
            for _ in range(draw(st.integers(1, 2))):
                req.inputs.add(name="input", datatype="UINT8", shape=[1, 784])
    return "ModelInfer", req.SerializeToString()


async def send_grpc(h: Harness, calls) -> None:
    import grpc

    async def one(method, data):
        fn = h.channel.unary_unary(f"/inference.GRPCInferenceService/{method}",
                                   request_serializer=lambda b: b, response_deserializer=lambda b: b)
        try:
            await fn(data, timeout=30)
            code = "OK"
        except grpc.aio.AioRpcError as e:
            code = e.code().name
            if code not in GRPC_OK:
                h.bad.append(f"gRPC {code} ({e.details()}) for {method} {data[:120]!r}")
        h.grpc_codes[code] += 1
    await asyncio.gather(*(one(m, d) for m, d in calls))


def test_fuzz_grpc(harness):
    @settings(max_examples=GRPC_EXAMPLES, **SETTINGS)
    @given(st.lists(grpc_request(), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
    def check(calls):
        before = len(harness.bad)
        harness.run(send_grpc(harness, calls))
        assert len(harness.bad) == before, harness.bad[before:before + 5]
    check()


# --- afterwards ----------------------------------------------------------------------------------
def test_after_fuzzing_nothing_died_and_a_good_request_is_answered_correctly(harness):
    import torch

    from superserve.embedded import load_bundle

    print(f"\nfuzz: {harness.sent} requests; HTTP {dict(harness.statuses)}; gRPC {dict(harness.grpc_codes)}")
    assert harness.sent >= 10_000
    assert not harness.bad, harness.bad[:10]
    srv = harness.srv
    assert srv.running and (srv.pid, tuple(srv.worker_pids), tuple(srv.info.get("frontend_pids", ()))) == harness.pids
    assert [e["event"] for e in srv.events() if e["event"].startswith(("worker_", "frontend_"))
            and e["event"] not in ("worker_ready", "frontend_ready")] == []
    # /metrics is on the scheduler's own port when front ends serve the public one
    admin = (f"http://{srv.config.host}:{srv.info['scheduler_http_port']}" if "scheduler_http_port" in srv.info
             else srv.http_url)

    async def metrics_and_answer():
        async with harness.session.get(admin + "/metrics") as r:
            text = await r.text()
        bundle = load_bundle(BUNDLE)
        x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
        body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28],
                                       "data": x.reshape(-1).tolist()}], "parameters": {"slo_ms": 5000}})
        async with harness.session.post(srv.http_url + INFER, data=body) as r:
            answer = json.loads(await r.read())
            status = r.status
        return text, status, answer, bundle, x
    text, status, answer, bundle, x = harness.run(metrics_and_answer())
    assert "superserve_worker_deaths_total 0.0" in text and "superserve_worker_restarts_total 0.0" in text
    assert 'superserve_requests_total{outcome="error"} 0.0' in text
    assert status == 200, answer
    logits = np.asarray(next(o for o in answer["outputs"] if o["name"] == "logits")["data"], dtype=np.float32)
    with torch.inference_mode():
        bundle.model.actuate(answer["parameters"]["subnet_id"])
        expected = bundle.model(torch.from_numpy(x)).numpy().reshape(-1)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
