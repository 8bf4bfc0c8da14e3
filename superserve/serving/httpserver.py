"""A lean HTTP/1.1 server for the front ends' inference path: asyncio protocols over
httptools (the llhttp parser uvicorn uses), no Task, no request or response object per call.

Why not aiohttp here: a front end does little per request (parse, decode a row, pass it on,
encode the answer), so the framework is most of its cost. Measured side by side on this
project's 2-core machine, Poisson at 1,500 req/s from the project's load client, a handler
answering a fixed body: aiohttp 87 us of server CPU per request, this protocol 20 us. The
single-process server keeps aiohttp (dashboard, admin, metrics, streaming pages).

What it does, and the bounds it keeps:

* keep-alive and pipelining: answers leave in request order, each one ``write`` of head and
  body together (never split: Nagle + delayed ACK would add ~40 ms), ``TCP_NODELAY`` on;
* ``Content-Length`` and chunked bodies (httptools decodes chunks); ``Expect: 100-continue``;
* bounded: request head at most ``MAX_HEAD_BYTES`` (431), body at most ``max_body`` (413,
  then the connection is closed after the answer, the rest of the body read and dropped);
  a request begun but not complete within ``read_timeout_s`` gets 408 and the connection is
  closed; idle keep-alive connections are closed after ``IDLE_TIMEOUT_S``;
* malformed HTTP gets 400 and the connection is closed; a connection the client closes with
  answers pending calls each pending request's ``on_cancel``;
* a connection stops being read while it has ``MAX_PIPELINED`` requests unanswered or while
  its client does not read its answers (asyncio's write flow control): a client can make the
  server hold only so much for it.

The application is one callable, ``handle(request, reply)``: it calls ``reply(status, body,
content_type, headers)`` exactly once, at once or later, and may return a callable to run if
the client goes away first.
"""
from __future__ import annotations

import asyncio
import collections
import socket
import time
from http import HTTPStatus
from typing import Callable, Optional, cast

import httptools

MAX_HEAD_BYTES = 64 * 1024
MAX_PIPELINED = 64  # requests a connection may have unanswered before its reading pauses
IDLE_TIMEOUT_S = 75.0  # aiohttp's keep-alive default
SWEEP_EVERY_S = 0.5

Reply = Callable[[int, bytes, str, Optional[dict]], None]
Cancel = Callable[[], None]


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}


def response_bytes(status: int, body: bytes, content_type: str, headers: dict | None, close: bool,
                   head_only: bool = False) -> bytes:
    line = _STATUS_LINES.get(status) or b"HTTP/1.1 %d %s\r\n" % (status, _reason(status))
    parts = [line, b"Content-Type: ", content_type.encode("latin-1"), b"\r\nContent-Length: %d\r\n" % len(body)]
    if headers:
        for k, v in headers.items():
            parts.append(f"{k}: {v}\r\n".encode("latin-1"))
    if close:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    if not head_only:
        parts.append(body)
    return b"".join(parts)


class HttpRequest:
    """One parsed request: method and path as str, header names lower-cased."""

    __slots__ = ("method", "path", "query", "headers", "body")

    def __init__(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> None:
        self.method, self.path, self.query, self.headers, self.body = method, path, query, headers, body


class _Slot:
    """One request's place in its connection's answer order."""

    __slots__ = ("data", "close", "on_cancel")

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.close = False
        self.on_cancel: Cancel | None = None


class _Connection(asyncio.Protocol):
    def __init__(self, server: "LeanHttpServer") -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.slots: collections.deque[_Slot] = collections.deque()
        self.closing = False  # an answer with Connection: close was queued: read nothing more
        self.discarding = False  # after a refusal mid-body: drop what still arrives
        self._reset()
        self.began = 0.0  # a request's first bytes (0: between requests)
        self.last = time.monotonic()
        self.write_paused = False
        self.read_paused = False

    def _reset(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self._name = b""
        self.head_bytes = 0
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.in_body = False

    # --- asyncio -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        slots, self.slots = self.slots, collections.deque()
        for slot in slots:
            if slot.data is None and slot.on_cancel is not None:
                slot.on_cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.last = time.monotonic()
        if self.discarding or self.closing:
            return
        if not self.began:
            self.began = self.last
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if not self.discarding and not self.closing:
                self._refuse(400, f"malformed HTTP request: {str(exc)[:200]}")

    # --- httptools callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def _count(self, n: int) -> None:
        self.head_bytes += n
        if self.head_bytes > MAX_HEAD_BYTES:
            self._refuse(431, f"request head larger than {MAX_HEAD_BYTES} bytes")
            raise httptools.HttpParserError("refused")

    def on_headers_complete(self) -> None:
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.server.max_body:
            self._refuse(413, f"request body larger than {self.server.max_body} bytes")
            raise httptools.HttpParserError("refused")
        if self.headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.in_body = True

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > self.server.max_body:
            self._refuse(413, f"request body larger than {self.server.max_body} bytes")
            raise httptools.HttpParserError("refused")
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.began = 0.0
        if self.closing or self.discarding:  # pipelined after a Connection: close
            return
        parsed = httptools.parse_url(self.url)
        body = b"".join(self.body) if len(self.body) != 1 else self.body[0]
        method = self.parser.get_method().decode("latin-1")
        request = HttpRequest(method, parsed.path.decode("latin-1"),
                              (parsed.query or b"").decode("latin-1"), self.headers, body)
        slot = _Slot()
        slot.close = not self.parser.should_keep_alive()
        self.slots.append(slot)
        if len(self.slots) >= MAX_PIPELINED:
            self._flow()
        head_only = method == "HEAD"

        def reply(status: int, body: bytes, content_type: str = "application/json",
                  headers: dict | None = None) -> None:
            if slot.data is not None:
                return
            if self.server.draining and self.slots and slot is self.slots[-1] and not self.began:
                slot.close = self.closing = True  # the last one asked: its client goes to a sibling
            slot.data = response_bytes(status, body, content_type, headers, slot.close, head_only)
            slot.on_cancel = None
            self._write_ready()

        try:
            slot.on_cancel = self.server.handle(request, reply)
        except Exception as exc:  # noqa: BLE001 - a bug in a handler must not drop the request
            reply(500, b'{"error": "internal error: %s"}' % type(exc).__name__.encode())
        if slot.close:
            self.closing = True

    # --- answers and flow control --------------------------------------------------------
    def _write_ready(self) -> None:
        slots, t = self.slots, self.transport
        while slots:
            data = slots[0].data
            if data is None:
                break
            slot = slots.popleft()
            if t is None:
                continue
            t.write(data)
            if slot.close:
                self._close_soon()
                return
        if self.read_paused:
            self._flow()

    def pause_writing(self) -> None:  # asyncio: the client is not reading its answers
        self.write_paused = True
        self._flow()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._flow()

    def _flow(self) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        hold = self.write_paused or len(self.slots) >= MAX_PIPELINED
        if hold and not self.read_paused:
            t.pause_reading()
            self.read_paused = True
        elif not hold and self.read_paused:
            t.resume_reading()
            self.read_paused = False

    def _refuse(self, status: int, message: str) -> None:
        """Answer the request being read with ``status`` and close after it: the rest of
        what the client sends is read and dropped, so it sees the answer, not a reset."""
        if self.discarding:
            return
        self.discarding = True
        self.began = 0.0
        self.server.refused(status)
        slot = _Slot()
        slot.close = True
        body = ('{"error": "%s"}' % message.replace('"', "'").replace("\\", "/")).encode()
        slot.data = response_bytes(status, body, "application/json", None, True)
        self.slots.append(slot)
        self._write_ready()

    def _close_soon(self) -> None:
        """Half-close now (the client reads the answer, then EOF); close when it has had
        time to read it."""
        t = self.transport
        if t is None:
            return
        self.closing = True
        if t.can_write_eof():
            try:
                t.write_eof()
            except (OSError, RuntimeError):
                pass
        asyncio.get_running_loop().call_later(1.0, t.close)


class LeanHttpServer:
    """The listening side: ``handle(request, reply) -> on_cancel | None`` per request;
    ``refused(status)`` counts what the protocol answers itself (400, 408, 413, 431)."""

    def __init__(self, handle: Callable[[HttpRequest, Reply], Cancel | None], *, max_body: int,
                 read_timeout_s: float, refused: Callable[[int], None] = lambda status: None) -> None:
        self.handle, self.max_body, self.read_timeout_s, self.refused = handle, max_body, read_timeout_s, refused
        self.connections: set[_Connection] = set()
        self.draining = False  # not listening: every answer closes its connection
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    async def start(self, host: str, port: int, *, reuse_port: bool = False, backlog: int = 1024,
                    ssl_context=None) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, reuse_port=reuse_port,
                                                backlog=backlog, ssl=ssl_context)
        self._sweeper = loop.call_later(SWEEP_EVERY_S, self._sweep)

    @property
    def port(self) -> int:
        """The bound port (``start`` with port 0 picks a free one)."""
        assert self._server is not None and self._server.sockets, "not started"
        return self._server.sockets[0].getsockname()[1]

    def _sweep(self) -> None:
        now = time.monotonic()
        for conn in list(self.connections):
            if conn.began and not conn.read_paused and now - conn.began > self.read_timeout_s:
                conn._refuse(408, f"request not received within {self.read_timeout_s:g} s "
                                  "(Content-Length larger than the body sent?)")
            elif not conn.slots and not conn.began and now - conn.last > IDLE_TIMEOUT_S and conn.transport:
                conn.transport.close()
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_EVERY_S, self._sweep)

    def pending(self) -> int:
        """Requests taken in and not yet answered."""
        return sum(1 for c in self.connections for s in c.slots if s.data is None)

    def stop_listening(self) -> None:
        """Close the listening socket; open connections are still served, each closed after
        its next answer (its client reconnects to a sibling), until ``close``."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):  # idle keep-alive connections: nothing to finish
            if not conn.slots and not conn.began and conn.transport is not None:
                conn.transport.close()

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
