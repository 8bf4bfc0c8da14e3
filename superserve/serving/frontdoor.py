"""The scheduler's side of the front door (``superserve serve --frontends N``).

N front-end processes (superserve/serving/frontend.py) share the HTTP port with
``SO_REUSEPORT``: they parse, validate and decode requests and pass compact records to this
process over a Unix stream socket each (wire format: superserve/serving/wire.py). Here,
each connection's protocol callback puts every record of a message straight into the
router's EDF queue (:meth:`Router.submit`: no coroutine, no future per request); answers
are collected per front end and sent as one message per front end per loop iteration (one
finished batch, or the refusals of one intake burst).

Failure handling: every request gets exactly one answer. A front end that dies is seen at
once (its pidfd becomes readable): its queued requests are cancelled (their clients' TCP
connections died with it) and it is restarted with back-off; the new process connects
anew, so answers meant for the dead one can never reach it.
The other front ends keep serving the port meanwhile. On shutdown the router drains and
answers everything (503 for what is left), the answers are flushed, then the front ends get
SIGTERM (they finish their open responses) and SIGKILL after a grace period.

Also here: :class:`InstantPool`, workers that answer at once without compute
(``instant_workers``, testing only), to measure the scheduler's own ceiling.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from superserve.outcome import Outcome
from superserve.serving import wire
from superserve.serving.config import ServeConfig
from superserve.serving.events import EventLog
from superserve.serving.logs import log
from superserve.serving.messages import BatchDone
from superserve.serving.model_info import ModelInfo
from superserve.serving.pool import PoolListener, WorkerCounts, WorkerHandle, WorkerState
from superserve.serving.router import InferResult, Router, pending

STATUS_EVERY_S = 0.2  # status (ready/live/calibration) to every front end; also their heartbeat
RESTART_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)  # per recent death of the same slot
STOP_GRACE_S = 3.0
_OUTCOMES = list(Outcome)
_ANSWERED = (Outcome.IN_TIME, Outcome.LATE)


class _Reply:
    """One request's answer slot (the router's :class:`~superserve.serving.router.Reply`)."""

    __slots__ = ("fe", "rid", "_done")

    def __init__(self, fe: "_Frontend", rid: int) -> None:
        self.fe, self.rid, self._done = fe, rid, False

    def done(self) -> bool:
        return self._done

    def drop(self) -> None:
        """No answer will be sent (its front end or client is gone): later results are ignored."""
        self._done = True

    def set_result(self, result: InferResult) -> None:
        if self._done:
            return
        self._done = True
        fe = self.fe
        fe.pending.pop(self.rid, None)
        if fe.alive:
            fe.out.append((self.rid, result))
            door = fe.door
            if not door._flush_scheduled:
                door._flush_scheduled = True
                door.loop.call_soon(door._flush)


class _Frontend:
    """One front-end slot (or an external injector that said hello, slot -1)."""

    def __init__(self, door: "FrontDoor", index: int, generation: int) -> None:
        self.door, self.index, self.generation = door, index, generation
        self.channel: wire.Channel | None = None  # its connection, once it said hello
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.pidfd: int | None = None
        self.alive = True
        self.hello = False
        self.retiring = False  # replaced after a hot reload: its exit is no death
        self.pending: dict[int, Any] = {}  # request id -> the router's Request (to cancel)
        self.out: list[tuple[int, InferResult]] = []
        self.deaths: list[float] = []


class FrontDoor:
    def __init__(self, config: ServeConfig, info: ModelInfo, router: Router, loop: asyncio.AbstractEventLoop,
                 events: EventLog, default_slo_ms: float, live: Callable[[], bool] = lambda: True) -> None:
        self.config, self.info, self.router, self.loop, self.events = config, info, router, loop, events
        self.default_slo_ms = default_slo_ms
        self.live = live
        self.count = config.frontends
        self.row_bytes = info.input_bytes
        if self.row_bytes > wire.MAX_MESSAGE_BYTES // 2:
            raise ValueError(f"the model's input ({self.row_bytes} bytes as float32) is too large for the front door's "
                             f"messages ({wire.MAX_MESSAGE_BYTES // 2} bytes at most); serve it with --frontends 0")
        self._dir = Path(tempfile.mkdtemp(prefix="superserve-frontdoor-"))
        os.chmod(self._dir, 0o700)  # the IPC socket: this user's processes only
        self.endpoint = str(self._dir / "scheduler.sock")
        # Listening from here on: front ends may connect before the loop accepts (backlog).
        listener = self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.endpoint)
        listener.listen(256)
        listener.setblocking(False)
        self._server: asyncio.AbstractServer | None = None
        self._accepting: asyncio.Task | None = None
        # Said hello, connection open: where answers and status go. Answers are bounded by
        # the requests in flight (queue_capacity + running batches).
        self._connected: list[_Frontend] = []
        self.slots: list[_Frontend | None] = [None] * self.count
        self._flush_scheduled = False
        self._stopping = False
        self._closed = False
        self._retiring: list[_Frontend] = []
        self._roll: asyncio.Task | None = None
        self._status_timer: asyncio.TimerHandle | None = None
        self._hello = asyncio.Event()
        self.port = 0
        self.grpc_port: int | None = None  # the front ends serve gRPC too when the config has a port
        self._port_socks: list[socket.socket] = []
        self.received = 0  # records taken in
        self._config_path = self._dir / "config.json"
        settings = config.to_dict()
        settings.pop("auth_token", None)  # travels in the environment, never on disk
        self._config_path.write_text(json.dumps(settings))

    # --- start / stop --------------------------------------------------------------------
    def reserve_port(self) -> int:
        """Resolve the HTTP port (and the gRPC port, when set; 0: a free one) and hold each
        with a bound, non-listening ``SO_REUSEPORT`` socket, so every front end binds the same
        ports and a restarted one finds them still ours."""
        self.port = self._reserve(self.config.http_port)
        if self.config.grpc_port is not None:
            self.grpc_port = self._reserve(self.config.grpc_port)
        return self.port

    def _reserve(self, port: int) -> int:
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((self.config.host, port))
        self._port_socks.append(s)
        return s.getsockname()[1]

    def start(self) -> None:
        self._accepting = self.loop.create_task(self._accept())
        for i in range(self.count):
            self._spawn(i, 0)
        self._status_timer = self.loop.call_later(STATUS_EVERY_S, self._status_tick)

    async def _accept(self) -> None:
        self._server = await self.loop.create_unix_server(lambda: wire.Channel(self._message, self._lost),
                                                          sock=self._listener)

    async def wait_connected(self, timeout_s: float = 60.0) -> None:
        """Wait until every front end said hello (it is bound and connected)."""
        end = time.monotonic() + timeout_s
        while not all(fe is not None and fe.hello for fe in self.slots):
            if time.monotonic() > end:
                raise RuntimeError(f"front ends not connected after {timeout_s:.0f} s")
            self._hello.clear()
            try:
                await asyncio.wait_for(self._hello.wait(), 0.5)
            except asyncio.TimeoutError:
                pass

    def _spawn(self, index: int, generation: int) -> None:
        fe = _Frontend(self, index, generation)
        env = dict(os.environ)
        if self.config.auth_token:
            env["SUPERSERVE_FRONTEND_TOKEN"] = self.config.auth_token
        for var in [v for v in env if v.startswith("SUPERSERVE_") and v != "SUPERSERVE_FRONTEND_TOKEN"]:
            del env[var]  # the config file is the whole configuration
        fe.proc = subprocess.Popen(
            [sys.executable, "-m", "superserve.serving.frontend", "--config", str(self._config_path),
             "--index", str(index), "--generation", str(generation), "--endpoint", self.endpoint,
             "--port", str(self.port), "--slo-ms", repr(self.default_slo_ms), "--parent", str(os.getpid())]
            + (["--grpc-port", str(self.grpc_port)] if self.grpc_port is not None else []),
            stdin=subprocess.DEVNULL, env=env)
        fe.pid = fe.proc.pid
        self.slots[index] = fe
        try:
            fe.pidfd = os.pidfd_open(fe.pid)
            self.loop.add_reader(fe.pidfd, self._exited, fe)
        except (AttributeError, OSError):  # no pidfd: the status timer polls instead
            fe.pidfd = None

    def _exited(self, fe: _Frontend) -> None:
        if not fe.alive:
            return
        fe.alive = False
        if fe.pidfd is not None:
            self.loop.remove_reader(fe.pidfd)
            os.close(fe.pidfd)
            fe.pidfd = None
        code = fe.proc.poll() if fe.proc is not None else None
        self._disconnect(fe)
        lost = list(fe.pending.values())
        fe.pending.clear()
        fe.out.clear()
        for req in lost:  # its clients' connections died with it: free their queue slots
            reply = pending(req).future
            if isinstance(reply, _Reply):
                reply.drop()
            self.router.cancel(req)
        if fe.index < 0 or self._stopping or fe.retiring:
            if fe in self._retiring:
                self._retiring.remove(fe)
            return
        now = time.monotonic()
        slot = self.slots[fe.index]
        deaths = [t for t in (slot.deaths if slot is not None else []) if now - t < 60.0] + [now]
        delay = RESTART_BACKOFF_S[min(len(deaths), len(RESTART_BACKOFF_S)) - 1]
        self.events.emit("frontend_died", f"front end {fe.index} (pid {fe.pid}) exited with {code}; "
                         f"{len(lost)} requests it held were cancelled; restarting in {delay:g} s",
                         frontend=fe.index, pid=fe.pid, exitcode=code, cancelled=len(lost))
        self.loop.call_later(delay, self._restart, fe.index, fe.generation + 1, deaths)

    def _restart(self, index: int, generation: int, deaths: list[float]) -> None:
        if self._stopping:
            return
        self._spawn(index, generation)
        fe = self.slots[index]
        assert fe is not None
        fe.deaths = deaths

    async def stop(self) -> None:
        """Flush the answers, stop the front ends (SIGTERM, then SIGKILL), close the socket."""
        if self._closed:
            return
        self._stopping = True
        self._flush()
        if self._status_timer is not None:
            self._status_timer.cancel()
        if self._roll is not None:
            self._roll.cancel()
        procs = [fe.proc for fe in [*self.slots, *self._retiring] if fe is not None and fe.proc is not None]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        end = time.monotonic() + STOP_GRACE_S
        while any(p.poll() is None for p in procs) and time.monotonic() < end:
            await asyncio.sleep(0.02)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for fe in [*self.slots, *self._retiring]:
            if fe is not None and fe.pidfd is not None:
                self.loop.remove_reader(fe.pidfd)
                os.close(fe.pidfd)
                fe.pidfd = None
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._accepting is not None:
            self._accepting.cancel()
        if self._server is not None:
            self._server.close()
        else:
            self._listener.close()
        for fe in list(self._connected):
            self._disconnect(fe)
        for s in self._port_socks:
            s.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    # --- hot reload ----------------------------------------------------------------------
    def set_model(self, info: ModelInfo) -> None:
        """A hot reload swapped the bundle (same input shape and classes, but its own metadata
        and maybe its own pixel normalisation): replace the front ends one at a time, each new
        one serving the port before the old one stops, so the port is never unserved."""
        self.info = info
        settings = json.loads(self._config_path.read_text())
        settings.update(bundle=str(info.bundle), profile=None, subnets=None)  # as the reload reads it
        self._config_path.write_text(json.dumps(settings))
        if self._roll is not None:
            self._roll.cancel()  # the new ones it started read the new file too
        self._roll = asyncio.ensure_future(self._replace_all())

    async def _replace_all(self) -> None:
        for i in range(self.count):
            old = self.slots[i]
            if self._stopping:
                return
            if old is not None:
                old.retiring = True
                self._retiring.append(old)
            self._spawn(i, (old.generation + 1) if old is not None else 0)
            new = self.slots[i]
            end = time.monotonic() + 60.0
            while new is not None and new.alive and not new.hello and time.monotonic() < end:
                await asyncio.sleep(0.05)
            if old is not None and old.proc is not None and old.proc.poll() is None:
                old.proc.send_signal(signal.SIGTERM)  # it finishes its open responses, then exits
            pid = new.pid if new is not None else None
            self.events.emit("frontend_replaced", f"front end {i} replaced for the new bundle (pid {pid})",
                             frontend=i, pid=pid)

    @property
    def frontend_pids(self) -> list[int | None]:
        return [fe.pid if fe is not None else None for fe in self.slots]

    # --- intake --------------------------------------------------------------------------
    def _message(self, channel: wire.Channel, frames: list[memoryview]) -> None:
        """One message from a front end (one that raises is logged and dropped by the
        channel: a malformed message never stops the intake)."""
        kind = frames[0]
        fe = channel.peer
        if kind == wire.REQUESTS:
            if isinstance(fe, _Frontend) and len(frames) == 3:
                self._requests(fe, frames[1], frames[2])
        elif kind == wire.CANCELS:
            if not isinstance(fe, _Frontend) or len(frames) != 2:
                return
            cancel = self.router.cancel
            for (rid,) in wire.CANCEL.iter_unpack(frames[1]):
                req = fe.pending.pop(rid, None)
                if req is not None:
                    reply = pending(req).future
                    if isinstance(reply, _Reply):
                        reply.drop()
                    cancel(req)
        elif kind == wire.HELLO_KIND and len(frames) == 2 and fe is None:
            self._hello_from(channel, *wire.HELLO.unpack(frames[1]))

    def _hello_from(self, channel: wire.Channel, index: int, generation: int, pid: int) -> None:
        if index == wire.INJECTOR:  # a load injector (benchmarks): served, not supervised
            fe = _Frontend(self, -1, generation)
            fe.pid = pid
        else:
            slot = self.slots[index] if index < self.count else None
            if slot is None or slot.generation != generation or not slot.alive or slot.channel is not None:
                log(30, f"front door: hello from an unknown front end ({index}.{generation}, pid {pid}): closed")
                channel.close()
                return
            fe = slot
        fe.channel, channel.peer = channel, fe
        self._connected.append(fe)
        if fe.index >= 0 and not fe.hello:
            self.events.emit("frontend_ready", f"front end {fe.index} (pid {pid}) serving port {self.port}",
                             frontend=fe.index, pid=pid, restarted=fe.generation > 0)
        fe.hello = True
        self._send_status(fe)
        self._hello.set()

    def _lost(self, channel: wire.Channel) -> None:
        """A connection closed. An injector's requests are cancelled; a front end's death is
        seen by its pidfd (one that lost its connection exits by itself)."""
        fe = channel.peer
        if not isinstance(fe, _Frontend):
            return
        if fe.index < 0:
            self._exited(fe)
        else:
            self._disconnect(fe)

    def _disconnect(self, fe: _Frontend) -> None:
        if fe in self._connected:
            self._connected.remove(fe)
        fe.out.clear()
        if fe.channel is not None:
            fe.channel.peer = None
            fe.channel.close()
            fe.channel = None

    def _requests(self, fe: _Frontend, head: memoryview, rows: memoryview) -> None:
        size = wire.REQUEST.size
        if len(head) % size or len(head) > size * wire.MAX_RECORDS:
            raise ValueError(f"requests header of {len(head)} bytes")
        submit, row_bytes, fe_pending = self.router.submit, self.row_bytes, fe.pending
        off, n_rows = 0, len(rows)  # each row a view into the message: no copy until the worker's slab
        n = 0
        for rid, arrival, slo_ms, min_accuracy, flags, row_len in wire.REQUEST.iter_unpack(head):
            n += 1
            end = off + row_len
            reply = _Reply(fe, rid)
            if row_len != row_bytes or end > n_rows:
                reply.set_result(InferResult(Outcome.ERROR, message=f"front door: a row of {row_len} bytes "
                                             f"(the model takes {row_bytes})"))
                off = end
                continue
            req = submit(rows[off:end], slo_ms, min_accuracy, bool(flags & wire.STRICT), reply, arrival)
            off = end
            if req is not None:
                fe_pending[rid] = req
        self.received += n

    # --- answers -------------------------------------------------------------------------
    def _flush(self) -> None:
        """One answers message per front end holding answers."""
        self._flush_scheduled = False
        pack = wire.ANSWER.pack
        for fe in list(self._connected):
            out = fe.out
            if not out or fe.channel is None:
                continue
            fe.out = []
            for i in range(0, len(out), wire.MAX_RECORDS):
                head, logits, texts = [], [], []
                for rid, r in out[i:i + wire.MAX_RECORDS]:
                    o, lg, sid, acc, batch_size, queue_ms, compute_ms, worker, message, floor_met = r
                    if o is Outcome.IN_TIME or o is Outcome.LATE:
                        text = _SUBNET_BYTES.get(sid) or _subnet_bytes(sid)
                        logits.append(lg or b"")
                    else:
                        text = message.encode()[:wire.MAX_TEXT]
                    texts.append(text)
                    head.append(pack(rid, o, floor_met, worker, batch_size, len(text), acc, queue_ms, compute_ms))
                if not fe.channel.send([wire.ANSWERS, b"".join(head), b"".join(logits), b"".join(texts)]):
                    # the peer is gone (its requests are cancelled on its death)
                    log(30, f"front door: answers to front end {fe.index} not sent: connection closed")
                    break

    def _status_tick(self) -> None:
        self._status_timer = None
        for fe in list(self._connected):
            self._send_status(fe)
        for fe in self.slots:  # without pidfd: poll
            if fe is not None and fe.alive and fe.pidfd is None and fe.proc is not None and fe.proc.poll() is not None:
                self._exited(fe)
        if not self._stopping:
            self._status_timer = self.loop.call_later(STATUS_EVERY_S, self._status_tick)

    def broadcast_status(self) -> None:
        for fe in list(self._connected):
            self._send_status(fe)

    def _send_status(self, fe: _Frontend) -> None:
        router = self.router
        if fe.channel is not None:
            body = json.dumps(router.calibration_info()).encode()
            fe.channel.send([wire.STATUS_KIND, wire.STATUS.pack(router.ready, bool(self.live())), body])


_SUBNET_BYTES: dict[str, bytes] = {}


def _subnet_bytes(subnet_id: str) -> bytes:
    b = _SUBNET_BYTES.get(subnet_id)
    if b is None:
        b = _SUBNET_BYTES[subnet_id] = subnet_id.encode()[:wire.MAX_TEXT]
    return b


# --- instant workers (testing only) ---------------------------------------------------------
class InstantPool(WorkerCounts):
    """Workers that answer every batch at once (zero logits, compute_ms 0) without a
    process: the scheduler's own ceiling (``instant_workers``; benchmarks/frontdoor.py).
    The rows are still copied into a slab, as for a real worker."""

    backend = "instant"

    def __init__(self, info: ModelInfo, config: ServeConfig) -> None:
        self.info = info
        self.listener: PoolListener | None = None
        self.spares: list[WorkerHandle] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        b = info.profile.max_batch
        self.workers = [WorkerHandle(i, None, None, memoryview(bytearray(b * info.input_bytes)),
                                     memoryview(bytearray(b * info.output_bytes)), warmup_s=0.0)
                        for i in range(config.workers)]

    def start(self, loop: asyncio.AbstractEventLoop, listener: PoolListener) -> None:
        self._loop, self.listener = loop, listener
        for w in self.workers:
            w.state = WorkerState.IDLE
            loop.call_soon(listener.worker_ready, w)

    def run(self, w: WorkerHandle, msg: Any, rows: Any) -> None:
        view, n, off = w.input_view, self.info.input_bytes, 0
        for row in rows:
            view[off:off + n] = row
            off += n
        w.state = WorkerState.BUSY
        assert self._loop is not None and self.listener is not None
        self._loop.call_soon(self._done, w, msg.seq)

    def _done(self, w: WorkerHandle, seq: int) -> None:
        w.state = WorkerState.IDLE
        assert self.listener is not None
        self.listener.batch_done(w, BatchDone(seq, 0.0))

    def kill(self, w: WorkerHandle) -> None:
        pass

    def spawn(self, w: WorkerHandle) -> None:
        w.state = WorkerState.IDLE
        if self._loop is not None and self.listener is not None:
            self._loop.call_soon(self.listener.worker_ready, w)

    def promote(self, dead: WorkerHandle) -> WorkerHandle | None:
        return None

    def add_workers(self, n: int) -> list[WorkerHandle]:
        raise RuntimeError("instant workers cannot be scaled")

    def remove_workers(self, ws: list[WorkerHandle]) -> None:
        raise RuntimeError("instant workers cannot be scaled")

    async def stop_workers(self, ws: list[WorkerHandle], timeout_s: float = 5.0) -> None:
        for w in ws:
            w.state = WorkerState.STOPPED

    async def stop(self, timeout_s: float = 5.0) -> None:
        await self.stop_workers(self.workers)

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return f"{len(self.workers)} instant workers (no compute: testing only)"
