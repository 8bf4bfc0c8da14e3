"""A lean HTTP/1.1 client transport for the open-loop sender: asyncio protocols, no tasks.

Why not only aiohttp: on a small machine the client shares the CPU with the router and
the workers, so every microsecond the client spends per request is taken from the server
it measures. aiohttp costs a Task, a request object, a response object and a stream reader
per call. Here a request is one ``transport.write`` of bytes prepared before the run, and
the answer is parsed in ``data_received`` and handed to a callback: no Task, no Future.

Scope, on purpose narrow: one request in flight per connection (no pipelining, so one slow
answer never delays another), keep-alive, responses framed by Content-Length (what KServe
servers send for infer answers; anything else is reported as an error, never guessed).
Connections are opened on demand up to ``max_connections``; beyond that, requests wait in
FIFO order for the next free connection (their latency still runs from the scheduled time).
"""
from __future__ import annotations

import asyncio
import collections
import socket
import time
from typing import Callable

# on_answer(request index, status, inference-header-length or -1, body, answered-at monotonic)
AnswerCallback = Callable[[int, int, int, bytes, float], None]
# on_failure(request index, kind ("timeout" | "conn_error"), detail, at monotonic)
FailureCallback = Callable[[int, str, str, float], None]

_HDR_END = b"\r\n\r\n"


def build_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The complete request bytes (head + body): written with one call, so Nagle never
    splits it."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Connection(asyncio.Protocol):
    __slots__ = ("client", "transport", "buf", "index", "sent_at", "alive")

    def __init__(self, client: "RawHttpClient") -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.index = -1  # request in flight, -1 when idle
        self.sent_at = 0.0
        self.alive = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.alive = True
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, index: int, data: bytes) -> None:
        self.index = index
        self.sent_at = time.monotonic()
        self.transport.write(data)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.buf = self.buf + data if self.buf else data
        buf = self.buf
        end = buf.find(_HDR_END)
        if end < 0:
            return
        head = buf[:end]
        status, length, ihl, close = _parse_head(head)
        if length < 0:
            self._fail("conn_error", "response without Content-Length (raw transport needs it; "
                                     "use --transport aiohttp)")
            return
        total = end + 4 + length
        if len(buf) < total:
            return
        body = buf[end + 4:total]
        self.buf = buf[total:]
        index, self.index = self.index, -1
        if index >= 0:
            self.client._answered(self, index, status, ihl, body, close)

    def _fail(self, kind: str, detail: str) -> None:
        index, self.index = self.index, -1
        self.alive = False
        if self.transport is not None:
            self.transport.abort()
        if index >= 0:
            self.client._failed(self, index, kind, detail)

    def connection_lost(self, exc: Exception | None) -> None:
        was_alive, self.alive = self.alive, False
        index, self.index = self.index, -1
        if index >= 0:
            self.client._failed(self, index, "conn_error", f"connection lost: {exc or 'closed by server'}")
        elif was_alive:
            self.client._dropped(self)


def _parse_head(head: bytes) -> tuple[int, int, int, bool]:
    """(status, content length or -1, inference header length or -1, connection: close)."""
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0][9:12])
    except ValueError:
        return 0, -1, -1, True
    length, ihl, close = -1, -1, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        n = name.strip().lower()
        if n == b"content-length":
            length = int(value)
        elif n == b"inference-header-content-length":
            ihl = int(value)
        elif n == b"connection" and value.strip().lower() == b"close":
            close = True
        elif n == b"transfer-encoding":
            return status, -1, ihl, True
    return status, length, ihl, close


class RawHttpClient:
    """Connections to one host:port; ``submit(index, data)`` sends at once on an idle
    connection, opens one if allowed, else queues."""

    def __init__(self, host: str, port: int, on_answer: AnswerCallback, on_failure: FailureCallback,
                 max_connections: int = 512) -> None:
        self.host, self.port = host, port
        self.on_answer, self.on_failure = on_answer, on_failure
        self.max_connections = max_connections
        self.idle: list[_Connection] = []
        self.busy: set[_Connection] = set()
        self.opening = 0
        self.waiting: collections.deque[tuple[int, bytes]] = collections.deque()
        self.loop = asyncio.get_running_loop()
        self.connect_errors = 0

    @property
    def connections(self) -> int:
        return len(self.idle) + len(self.busy) + self.opening

    async def open(self, n: int) -> None:
        """Open ``n`` connections ahead of the run (handshakes off the clock)."""
        conns = await asyncio.gather(*(self._connect() for _ in range(n)), return_exceptions=True)
        for c in conns:
            if isinstance(c, _Connection):
                self.idle.append(c)

    async def _connect(self) -> _Connection:
        _, proto = await self.loop.create_connection(lambda: _Connection(self), self.host, self.port)
        return proto

    def submit(self, index: int, data: bytes) -> None:
        if self.idle:
            conn = self.idle.pop()
            self.busy.add(conn)
            conn.send(index, data)
            return
        self.waiting.append((index, data))
        if self.connections < self.max_connections:
            self.opening += 1
            self.loop.create_task(self._grow())

    async def _grow(self) -> None:
        try:
            conn = await self._connect()
        except OSError as e:
            self.opening -= 1
            self.connect_errors += 1
            # Nobody can serve the queue if no connection exists: fail the oldest waiter
            # rather than leave it hanging.
            if self.waiting and not self.busy:
                index, _ = self.waiting.popleft()
                self.on_failure(index, "conn_error", f"connect: {e}", time.monotonic())
            return
        self.opening -= 1
        self._release(conn)

    def _release(self, conn: _Connection) -> None:
        if not conn.alive:
            return
        if self.waiting:
            index, data = self.waiting.popleft()
            self.busy.add(conn)
            conn.send(index, data)
        else:
            self.idle.append(conn)

    def _answered(self, conn: _Connection, index: int, status: int, ihl: int, body: bytes, close: bool) -> None:
        now = time.monotonic()
        self.busy.discard(conn)
        if close:
            conn.alive = False
            conn.transport.close()  # type: ignore[union-attr]
        else:
            self._release(conn)
        self.on_answer(index, status, ihl, body, now)
        if close and self.waiting and self.connections < self.max_connections:
            self.opening += 1
            self.loop.create_task(self._grow())

    def _failed(self, conn: _Connection, index: int, kind: str, detail: str) -> None:
        self.busy.discard(conn)
        self.on_failure(index, kind, detail, time.monotonic())
        if self.waiting and self.connections < self.max_connections:
            self.opening += 1
            self.loop.create_task(self._grow())

    def _dropped(self, conn: _Connection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
        self.busy.discard(conn)

    def expire(self, now: float, timeout_s: float, queued_since: Callable[[int], float]) -> None:
        """Give up on requests in flight (or queued) for longer than ``timeout_s``: the
        answer is recorded as a timeout and the connection dropped."""
        for conn in [c for c in self.busy if c.index >= 0 and now - c.sent_at > timeout_s]:
            conn._fail("timeout", f"no answer within {timeout_s:g} s")
        while self.waiting and now - queued_since(self.waiting[0][0]) > timeout_s:
            index, _ = self.waiting.popleft()
            self.on_failure(index, "timeout", "no free connection", now)

    def close(self) -> None:
        for c in list(self.idle) + list(self.busy):
            if c.transport is not None:
                c.transport.close()
        self.idle.clear()
        self.busy.clear()

    @property
    def outstanding(self) -> int:
        return len(self.busy) + len(self.waiting)
