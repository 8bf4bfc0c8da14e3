"""Cancelled clients free their queue slot (REST disconnect and gRPC cancel), and SIGTERM
with a full queue answers every request already in the server, then exits 0.

The workers are paused with SIGSTOP (and the hang watchdog set far away) so that requests
pile up in the queue deterministically; the metrics page shows the queue length."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request

import aiohttp
import pytest

from superserve.embedded import EMBEDDED_DIR
from superserve.serving import ServerProcess

BUNDLE = os.environ.get("SUPERSERVE_BUNDLE", str(EMBEDDED_DIR))
INFER = "/v2/models/supernet/infer"
BODY = json.dumps({"inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 784], "data": [9] * 784}],
                   "parameters": {"slo_ms": 60000}, "outputs": [{"name": "class_index"}]}).encode()


def metric(srv, name: str) -> float:
    text = urllib.request.urlopen(srv.http_url + "/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def wait_metric(srv, name: str, value: float, timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while metric(srv, name) != value:
        if time.monotonic() > end:
            raise AssertionError(f"{name} stayed at {metric(srv, name)}, expected {value}")
        time.sleep(0.02)


def settled_queue(srv, timeout_s: float = 10.0) -> float:
    """The queue length once it has stopped changing for 0.3 s."""
    end = time.monotonic() + timeout_s
    last, since = metric(srv, "superserve_queue_length"), time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.05)
        now = metric(srv, "superserve_queue_length")
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > 0.3 and now > 0:
            return now
    raise AssertionError(f"queue did not settle: {last}")


@pytest.fixture
def paused_server():
    srv = ServerProcess(bundle=BUNDLE, workers=2, warmup_runs=1, late="serve", queue_capacity=512,
                        hang_timeout_s=60.0, drain_timeout_s=10.0).start()
    try:
        yield srv
    finally:
        for pid in srv.worker_pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        srv.stop()


def pause(srv) -> None:
    for pid in srv.worker_pids:
        os.kill(pid, signal.SIGSTOP)


def resume(srv) -> None:
    for pid in srv.worker_pids:
        os.kill(pid, signal.SIGCONT)


def test_rest_and_grpc_cancellation_free_queue_slots(paused_server):
    import grpc
    from tritonclient.grpc import service_pb2 as pb  # not superserve's module: see grpc_api's docstring

    srv = paused_server
    pause(srv)

    async def main():
        async with aiohttp.ClientSession() as s:
            async def post():
                async with s.post(srv.http_url + INFER, data=BODY) as r:
                    return r.status
            # Batches go to the (paused) workers; what is left of these waits in the queue.
            held = [asyncio.ensure_future(post()) for _ in range(40)]
            q0 = await asyncio.to_thread(settled_queue, srv)
            assert q0 > 0
            rest = [asyncio.ensure_future(post()) for _ in range(10)]
            await asyncio.to_thread(wait_metric, srv, "superserve_queue_length", q0 + 10)
            for t in rest:
                t.cancel()  # closes the connections mid-request
            await asyncio.gather(*rest, return_exceptions=True)
            await asyncio.to_thread(wait_metric, srv, "superserve_queue_length", q0)

            req = pb.ModelInferRequest(model_name="supernet")
            req.inputs.add(name="input", datatype="UINT8", shape=[1, 784])
            req.raw_input_contents.append(bytes(784))
            req.parameters["slo_ms"].int64_param = 60000
            async with grpc.aio.insecure_channel(srv.grpc_address) as ch:
                infer = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                       request_serializer=pb.ModelInferRequest.SerializeToString,
                                       response_deserializer=pb.ModelInferResponse.FromString)
                calls = [infer(req) for _ in range(8)]
                waiting = [asyncio.ensure_future(c) for c in calls]
                await asyncio.to_thread(wait_metric, srv, "superserve_queue_length", q0 + 8)
                for c in calls:
                    c.cancel()
                await asyncio.gather(*waiting, return_exceptions=True)
                await asyncio.to_thread(wait_metric, srv, "superserve_queue_length", q0)
                # A gRPC deadline that expires client-side frees the slot too.
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await infer(req, timeout=0.3)
                assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                await asyncio.to_thread(wait_metric, srv, "superserve_queue_length", q0)
            resume(srv)
            assert await asyncio.gather(*held) == [200] * 40
    asyncio.run(main())


def test_sigterm_with_a_full_queue_answers_every_request_and_exits_zero(paused_server):
    srv = paused_server
    pause(srv)
    n = 300

    async def main():
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as s:
            async def post():
                try:
                    async with s.post(srv.http_url + INFER, data=BODY) as r:
                        await r.read()
                        return r.status
                except aiohttp.ClientError as exc:
                    return f"no answer: {exc!r}"
            tasks = [asyncio.ensure_future(post()) for _ in range(n)]
            # Every request is inside the server: batches on the paused workers, the rest queued.
            queued = await asyncio.to_thread(settled_queue, srv, 30)
            assert queued >= n - 2 * 16
            srv.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.05)
            resume(srv)
            return await asyncio.gather(*tasks)
    statuses = asyncio.run(main())
    assert all(s in (200, 503) for s in statuses), [s for s in statuses if s not in (200, 503)][:5]
    assert statuses.count(200) >= 2  # the drain served what it could in drain_timeout_s
    assert srv.proc.wait(30) == 0
    events = [e["event"] for e in srv.events()]
    assert "shutdown" in events and events[-1] == "stopped"
    assert not any(e == "worker_died" for e in events)  # stopped, not killed and restarted
