"""A front-end process of the front door (``superserve serve --frontends N``; docs/frontdoor.md).

It serves the KServe v2 REST inference path on the server's HTTP port, shared with its
sibling front ends through ``SO_REUSEPORT``: health, server and model metadata, model
config, and ``POST /v2/models/{name}/infer``. The HTTP layer is the lean protocol of
superserve/serving/httpserver.py (no Task or request object per call); parsing, validation,
decoding and answer encoding are the very code of the single-process server
(:class:`~superserve.serving.rest.RestApi` and :class:`~superserve.serving.codec.InputCodec`),
so both modes accept and refuse the same inputs with the same statuses. The router is
replaced by :class:`SchedulerLink`, which passes each decoded row to the scheduler process
over a Unix stream socket (superserve/serving/wire.py) and calls the request's answer callback from the
scheduler's batched answers.

Started and supervised by the scheduler (superserve/serving/frontdoor.py); it exits when its
parent does (PR_SET_PDEATHSIG, and a parent-pid check), and on SIGTERM closes its listening
socket, finishes its open responses and answers what the scheduler left unanswered with 503.
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import itertools
import json
import os
import signal
import sys
import time
from typing import Any, Callable
from urllib.parse import unquote

from superserve.outcome import Outcome
from superserve.serving import wire
from superserve.serving.auth import UNAUTHORIZED, BearerAuth
from superserve.serving.codec import ApiError, InputCodec, result_error
from superserve.serving.config import ServeConfig
from superserve.serving.httpserver import Cancel, HttpRequest, LeanHttpServer, Reply
from superserve.serving.model_info import ModelInfo, read_model_info
from superserve.serving.rest import HEADER_LENGTH, NOT_LIVE, OPEN_PATHS, RestApi, error_body
from superserve.serving.router import InferResult

STOP_GRACE_S = 2.0  # on SIGTERM: how long open requests may take before they get 503
ANSWER_GRACE_S = 10.0  # past its deadline + this, a request the scheduler never answered gets 500
SCHEDULER_SILENT_S = 2.0  # no status from the scheduler for this long: not ready
_OUTCOMES = {o.value: o for o in Outcome}


class _FrontendMetrics:
    """The scheduler's /metrics counts what reached it; refusals here are counted locally
    (``render``: in Prometheus' text format, for a look at one front end)."""

    def __init__(self) -> None:
        self.refusals: dict[int, int] = {}

    def refused(self, status: int) -> None:
        self.refusals[status] = self.refusals.get(status, 0) + 1

    def render(self) -> bytes:
        lines = ["# TYPE superserve_frontend_refusals_total counter"]
        lines += [f'superserve_frontend_refusals_total{{status="{k}"}} {v}' for k, v in sorted(self.refusals.items())]
        return ("\n".join(lines) + "\n").encode()


def _nothing() -> None:
    """The cancel of a request answered at once."""


class SchedulerLink:
    """The router as a front end sees it: ``submit`` (queue at the scheduler; the callback
    gets the answer), ``infer`` (the same, awaited), ``ready`` and ``calibration_info`` (from
    the scheduler's status messages)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, endpoint: str, index: int, generation: int) -> None:
        self.loop, self.endpoint = loop, endpoint
        self.index, self.generation = index, generation
        self.channel: wire.Channel | None = None
        self.on_lost: Callable[[], None] = lambda: None  # the scheduler went away
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[Callable[[InferResult], None], float]] = {}
        self._head = bytearray()
        self._rows: list[bytes] = []
        self._row_bytes = 0  # a message stays under half of MAX_MESSAGE_BYTES
        self._cancels: list[int] = []
        self._flush_scheduled = False
        self.closing = False
        self._ready = False
        self.live = True
        self._calibration: dict[str, Any] = {}
        self._last_status = 0.0
        self._sweeper = loop.call_later(1.0, self._sweep)

    async def connect(self) -> None:
        _, self.channel = await self.loop.create_unix_connection(lambda: wire.Channel(self._message, self._lost),
                                                                 self.endpoint)

    def hello(self) -> None:
        if self.channel is not None:
            self.channel.send([wire.HELLO_KIND, wire.HELLO.pack(self.index, self.generation, os.getpid())])

    # --- what RestApi and GrpcApi ask of a router -----------------------------------------
    @property
    def ready(self) -> bool:
        return self._ready and not self.closing and time.monotonic() - self._last_status < SCHEDULER_SILENT_S

    def calibration_info(self) -> dict[str, Any]:
        return self._calibration

    def submit(self, row: bytes, slo_ms: float, min_accuracy: float, strict: bool,
               done: Callable[[InferResult], None]) -> Cancel:
        """Queue ``row`` at the scheduler; ``done`` is called once with its answer (or a 503
        when shutting down, a 500 long past the deadline). Returns the request's cancel."""
        if self.closing:
            done(InferResult(Outcome.UNAVAILABLE, message="server is shutting down; retry later"))
            return _nothing
        rid = next(self._ids)
        now = time.monotonic()
        self._waiting[rid] = (done, now + slo_ms / 1000.0 + ANSWER_GRACE_S)
        self._head += wire.REQUEST.pack(rid, now, slo_ms, min_accuracy, wire.STRICT if strict else 0, len(row))
        self._rows.append(row)
        self._row_bytes += len(row)
        if len(self._rows) >= wire.MAX_RECORDS or self._row_bytes >= wire.MAX_MESSAGE_BYTES // 2:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)
        return lambda: self.cancel(rid)

    def cancel(self, rid: int) -> None:
        """The HTTP client went away: no answer is owed, free its slot at the scheduler."""
        if self._waiting.pop(rid, None) is not None:
            self._cancels.append(rid)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self.loop.call_soon(self._flush)

    async def infer(self, row: bytes, slo_ms: float, min_accuracy: float = 0.0, *, strict: bool = False,
                    origin: object = None) -> InferResult:
        """:meth:`submit`, awaited (the gRPC service's path)."""
        fut: asyncio.Future[InferResult] = self.loop.create_future()
        cancel = self.submit(row, slo_ms, min_accuracy, strict,
                             lambda result: fut.done() or fut.set_result(result))
        try:
            return await fut
        except asyncio.CancelledError:
            cancel()
            raise

    def waiting(self) -> int:
        return len(self._waiting)

    # --- to the scheduler ----------------------------------------------------------------
    def _flush(self) -> None:
        """Everything queued this loop iteration, as one requests message (and one cancels)."""
        self._flush_scheduled = False
        channel = self.channel
        if self._rows:
            head, rows = bytes(self._head), self._rows
            self._head, self._rows, self._row_bytes = bytearray(), [], 0
            if channel is not None and channel.buffered() > wire.MAX_MESSAGE_BYTES:
                why: str | None = "the scheduler is not keeping up with this front end"
            elif channel is not None and channel.send([wire.REQUESTS, head, b"".join(rows)]):
                why = None
            else:
                why = "the scheduler is unreachable"
            if why is not None:  # answer now
                for (rid, *_rest) in wire.REQUEST.iter_unpack(head):
                    self._resolve(rid, InferResult(Outcome.UNAVAILABLE, message=f"{why}; retry later"))
        if self._cancels:
            ids, self._cancels = self._cancels, []
            if channel is not None:
                channel.send([wire.CANCELS, b"".join(wire.CANCEL.pack(i) for i in ids)])

    def _resolve(self, rid: int, result: InferResult) -> None:
        entry = self._waiting.pop(rid, None)
        if entry is not None:
            entry[0](result)

    # --- from the scheduler --------------------------------------------------------------
    def _lost(self, channel: wire.Channel) -> None:
        self.channel, self._ready, self.live = None, False, False
        self.fail_all("the scheduler went away; retry later")
        self.on_lost()

    def _message(self, channel: wire.Channel, frames: list[memoryview]) -> None:
        kind = frames[0]
        if kind == wire.ANSWERS and len(frames) == 4:
            self._answers(frames[1], bytes(frames[2]), bytes(frames[3]))
        elif kind == wire.STATUS_KIND and len(frames) == 3:
            ready, live = wire.STATUS.unpack(frames[1])
            self._ready, self.live, self._last_status = bool(ready), bool(live), time.monotonic()
            try:
                info = json.loads(bytes(frames[2]))
                if isinstance(info, dict):
                    self._calibration = info
            except ValueError:
                pass

    def _answers(self, head: memoryview, logits: bytes, texts: bytes) -> None:
        waiting = self._waiting
        lo = to = 0
        for rid, o, floor_met, worker, batch, text_len, acc, queue_ms, compute_ms in wire.ANSWER.iter_unpack(head):
            text = texts[to:to + text_len].decode(errors="replace")
            to += text_len
            outcome = _OUTCOMES.get(o, Outcome.ERROR)
            if outcome is Outcome.IN_TIME or outcome is Outcome.LATE:
                out = self._out_bytes
                result = InferResult(outcome, logits[lo:lo + out], text, acc, batch, queue_ms, compute_ms, worker,
                                     floor_met=bool(floor_met))
                lo += out
            else:
                result = InferResult(outcome, None, "", acc, batch, queue_ms, compute_ms, worker, text,
                                     bool(floor_met))
            entry = waiting.pop(rid, None)
            if entry is not None:
                entry[0](result)

    _out_bytes = 0  # set by the process from the model's output size

    def _sweep(self) -> None:
        """Answer (500) requests the scheduler has not answered long past their deadline."""
        now = time.monotonic()
        for rid in [rid for rid, (_, expires) in self._waiting.items() if expires < now]:
            self._resolve(rid, InferResult(Outcome.ERROR, message="no answer from the scheduler in time"))
        if not self.closing:
            self._sweeper = self.loop.call_later(1.0, self._sweep)

    def fail_all(self, message: str) -> None:
        for rid in list(self._waiting):
            self._resolve(rid, InferResult(Outcome.UNAVAILABLE, message=message))

    def close(self) -> None:
        self._sweeper.cancel()
        if self.channel is not None:
            self.channel.close()


JSON = "application/json"
HEADER_LENGTH_KEY = HEADER_LENGTH.lower()  # the lean server lower-cases header names


class FrontendApp(RestApi):
    """The front end's routes on the lean HTTP server: health, server and model metadata,
    model readiness and config, and infer (the dashboard, /metrics and the admin endpoints
    stay on the scheduler process). Parsing, validation and answers are RestApi's own code."""

    def __init__(self, info: ModelInfo, link: SchedulerLink, codec: InputCodec, metrics: _FrontendMetrics,
                 max_request_bytes: int, auth: BearerAuth, read_timeout_s: float) -> None:
        super().__init__(info, link, codec, metrics, max_request_bytes, auth, read_timeout_s,
                         live=lambda: link.live)
        self.link = link

    def handle(self, req: HttpRequest, reply: Reply) -> Cancel | None:
        path = req.path
        if self.auth.enabled and path not in OPEN_PATHS and not self.auth.allows(req.headers.get("authorization")):
            self.metrics.refused(401)
            reply(401, json.dumps({"error": UNAUTHORIZED}).encode(), JSON,
                  {"WWW-Authenticate": 'Bearer realm="superserve"'})
            return None
        parts = path.split("/")
        if len(parts) >= 4 and parts[1] == "v2" and parts[2] == "models":
            name, rest, version = unquote(parts[3]), parts[4:], None
            if len(rest) >= 2 and rest[0] == "versions":
                version, rest = unquote(rest[1]), rest[2:]
            tail = rest[0] if len(rest) == 1 else ("" if not rest else None)
            if tail == "infer":
                if req.method != "POST":
                    return self._refuse(reply, ApiError(405, "infer takes POST"))
                return self._infer(req, name, version, reply)
            if tail in ("", "ready", "config"):
                if req.method not in ("GET", "HEAD"):
                    return self._refuse(reply, ApiError(405, f"{path} takes GET"))
                try:
                    model = self.model_for(name, version)
                except ApiError as exc:
                    return self._refuse(reply, exc, count=False)
                if tail == "":
                    reply(200, self.metadata_json(model), JSON, None)
                elif tail == "ready":
                    reply(200 if model.router.ready else 503, b"", JSON, None)
                else:
                    reply(200, model.config, JSON, None)
                return None
        elif path in ("/v2/health/live", "/v2/health/ready", "/v2"):
            if req.method not in ("GET", "HEAD"):
                return self._refuse(reply, ApiError(405, f"{path} takes GET"))
            if path == "/v2":
                reply(200, self._server_metadata, JSON, None)
            elif path == "/v2/health/ready":
                reply(200 if self.link.ready else 503, b"", JSON, None)
            elif self.is_live():
                reply(200, b"", JSON, None)
            else:
                reply(503, error_body(ApiError(503, NOT_LIVE)), JSON, None)
            return None
        return self._refuse(reply, ApiError(404, f"no such endpoint: {req.method} {path[:200]}"))

    def _refuse(self, reply: Reply, exc: ApiError, count: bool = True) -> None:
        reply(exc.status, error_body(exc, self.metrics if count else None), JSON, None)

    def _infer(self, req: HttpRequest, name: str, version: str | None, reply: Reply) -> Cancel | None:
        metrics = self.metrics
        try:
            model = self.model_for(name, version)
            metrics = model.metrics
            header, binary = self.split_body(req.headers.get(HEADER_LENGTH_KEY), req.body)
            row, options, outputs, binary_out, _origin = self._parse(header, binary, model.codec)
        except ApiError as exc:
            reply(exc.status, error_body(exc, metrics), JSON, None)
            return None
        request_id, info = header.get("id"), model.info

        def done(result: InferResult) -> None:
            try:
                if not result.ok:
                    exc = result_error(result)
                    reply(exc.status, error_body(exc, metrics), JSON, None)
                    return
                body, content_type, headers = self.answer_parts(request_id, result, outputs, binary_out, info)
            except Exception as exc:  # noqa: BLE001 - a bug here must cost one answer, not the scheduler link
                reply(500, error_body(ApiError(500, f"answer not encoded: {type(exc).__name__}")), JSON, None)
                return
            reply(200, body, content_type, headers)

        return self.link.submit(row, options.slo_ms, options.min_accuracy, options.strict, done)


def _die_with_parent() -> None:
    """SIGTERM when the scheduler dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


async def serve_frontend(config: ServeConfig, info: ModelInfo, *, index: int, generation: int, endpoint: str,
                         port: int, default_slo_ms: float, parent: int, grpc_port: int | None = None) -> int:
    loop = asyncio.get_running_loop()
    link = SchedulerLink(loop, endpoint, index, generation)
    link._out_bytes = info.output_bytes
    codec = InputCodec(info, config, default_slo_ms)
    metrics = _FrontendMetrics()
    app = FrontendApp(info, link, codec, metrics, config.max_request_bytes, BearerAuth(config.auth_token),
                      config.read_timeout_s)
    server = LeanHttpServer(app.handle, max_body=config.max_request_bytes, read_timeout_s=config.read_timeout_s,
                            refused=metrics.refused)
    ssl_context = None
    if config.tls:
        from superserve.serving.server import _ssl_context

        ssl_context = _ssl_context(config)
    await link.connect()
    await server.start(config.host, port, reuse_port=True, backlog=1024, ssl_context=ssl_context)
    grpc_server = await _start_grpc(config, info, link, codec, metrics, grpc_port) if grpc_port is not None else None
    link.hello()
    stop = asyncio.Event()
    link.on_lost = stop.set
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def watch_parent() -> None:
        if os.getppid() != parent:
            stop.set()
        else:
            loop.call_later(0.5, watch_parent)

    watch_parent()
    await stop.wait()
    # The siblings (or a replacement) take new connections; requests on the open ones are
    # still served (the scheduler answers 503 itself once it stops taking work), each answer
    # closing its connection, for up to STOP_GRACE_S; what is left then is answered 503.
    server.stop_listening()
    # gRPC: no new calls; the open ones end with their answers (or the 503s below)
    grpc_stopped = asyncio.ensure_future(grpc_server.stop(STOP_GRACE_S + 1.0)) if grpc_server is not None else None
    end = time.monotonic() + STOP_GRACE_S
    while (link.waiting() or server.pending()) and time.monotonic() < end:
        await asyncio.sleep(0.01)
    link.closing = True
    link._flush()
    link.fail_all("server shutting down; retry later")
    await asyncio.sleep(0.05)  # the last answers leave
    if grpc_stopped is not None:
        await grpc_stopped
    server.close()
    link.close()
    return 0


async def _start_grpc(config: ServeConfig, info: ModelInfo, link: SchedulerLink, codec: InputCodec,
                      metrics: _FrontendMetrics, port: int):
    """The KServe v2 gRPC service on the shared gRPC port (``SO_REUSEPORT``, as the HTTP port),
    the single-process server's own ``GrpcApi`` with the link as its router."""
    import grpc

    from superserve.serving.grpc_api import GrpcApi

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", config.max_request_bytes),
                                      ("grpc.so_reuseport", 1)])
    api = GrpcApi(info, link, codec, metrics, BearerAuth(config.auth_token), live=lambda: link.live)
    server.add_generic_rpc_handlers((api.handler(),))
    address = f"{config.host}:{port}"
    if config.tls:
        from superserve.serving.server import _grpc_credentials

        bound = server.add_secure_port(address, _grpc_credentials(config))
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot bind gRPC to {address}")
    await server.start()
    return server


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="superserve-frontend", description=__doc__)
    p.add_argument("--config", required=True)
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--generation", type=int, default=0)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--slo-ms", type=float, required=True)
    p.add_argument("--parent", type=int, required=True)
    p.add_argument("--grpc-port", type=int, default=None)
    args = p.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the scheduler, which stops us
    _die_with_parent()
    if os.getppid() != args.parent:
        return 0
    with open(args.config) as f:
        settings = json.load(f)
    token = os.environ.get("SUPERSERVE_FRONTEND_TOKEN")
    config = ServeConfig(**settings, auth_token=token or None)
    info = read_model_info(config)
    try:
        return asyncio.run(serve_frontend(config, info, index=args.index, generation=args.generation,
                                          endpoint=args.endpoint, port=args.port, default_slo_ms=args.slo_ms,
                                          parent=args.parent, grpc_port=args.grpc_port))
    except OSError as exc:
        print(f"superserve front end {args.index}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
