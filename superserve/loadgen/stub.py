"""A stand-in KServe v2 server with no model, for testing the client and measuring its ceiling.

It answers ``/v2/health/ready`` and ``/v2/models/{model}/infer`` with a fixed, valid reply
(the parameters a SuperServe answer carries), after an optional delay, and every
``shed_every``-th infer call with 503. It costs the server side almost nothing, so a replay
against it measures what the client itself can sustain.
"""
from __future__ import annotations

import asyncio
import json
import socket
import threading
from dataclasses import dataclass

from aiohttp import web


@dataclass
class StubBehaviour:
    delay_s: float = 0.0  # before answering each infer call
    shed_every: int = 0  # every n-th infer call gets 503 (0: never)
    predicted_class: int = 0  # argmax of the returned logits
    accuracy: float = 0.9


def _reply(b: StubBehaviour) -> bytes:
    logits = [0.0] * 10
    logits[b.predicted_class] = 1.0
    return json.dumps({"model_name": "stub", "outputs": [{"name": "logits", "shape": [1, 10], "datatype": "FP32",
                                                           "data": logits}],
                       "parameters": {"subnet_id": "stub-subnet", "accuracy": b.accuracy, "batch_size": 1,
                                      "queue_ms": 0.0, "compute_ms": 0.0, "outcome": "in_time"}}).encode()


def make_app(behaviour: StubBehaviour) -> web.Application:
    body = _reply(behaviour)
    count = 0

    async def infer(request: web.Request) -> web.Response:
        nonlocal count
        await request.read()
        count += 1
        if behaviour.delay_s > 0:
            await asyncio.sleep(behaviour.delay_s)
        if behaviour.shed_every and count % behaviour.shed_every == 0:
            return web.Response(status=503, text='{"error":"deadline cannot be met (stub)"}',
                                content_type="application/json")
        return web.Response(body=body, content_type="application/json")

    async def ready(_: web.Request) -> web.Response:
        return web.Response(text="{}", content_type="application/json")

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/v2/models/{model}/infer", infer)
    app.router.add_get("/v2/health/ready", ready)
    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StubServer:
    """Runs the stub on a background thread's event loop (``with StubServer() as url: ...``)."""

    def __init__(self, behaviour: StubBehaviour | None = None, port: int = 0) -> None:
        self.behaviour = behaviour or StubBehaviour()
        self.port = port or free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="stub-kserve")
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _start(self) -> None:
        self._runner = web.AppRunner(make_app(self.behaviour), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def __enter__(self) -> str:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self.url

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def serve_forever(port: int, behaviour: StubBehaviour | None = None) -> None:
    """Run the stub in the foreground (for a separate process: ``python -m superserve.loadgen.stub PORT``)."""
    web.run_app(make_app(behaviour or StubBehaviour()), host="127.0.0.1", port=port, access_log=None,
                print=None)


if __name__ == "__main__":
    import sys

    serve_forever(int(sys.argv[1]) if len(sys.argv) > 1 else 8000)
