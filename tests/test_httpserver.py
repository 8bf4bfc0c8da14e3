"""The front ends' lean HTTP/1.1 server (superserve/serving/httpserver.py), driven over real
sockets with raw bytes: the framing, ordering and bounds a client relies on."""
from __future__ import annotations

import asyncio

import pytest

from superserve.serving.httpserver import MAX_PIPELINED, LeanHttpServer

MAX_BODY = 1024


class App:
    """Echoes the body; ``/later`` answers after ``delay`` s (later requests may answer first);
    ``/never`` never answers and records its cancel."""

    def __init__(self) -> None:
        self.cancelled = 0
        self.refused: list[int] = []

    def handle(self, req, reply):
        loop = asyncio.get_running_loop()
        if req.path == "/boom":
            raise RuntimeError("handler bug")
        if req.path == "/never":
            def cancel() -> None:
                self.cancelled += 1
            return cancel
        body = b"%s %s %s" % (req.method.encode(), req.path.encode(), req.body)
        if req.path.startswith("/later"):
            loop.call_later(0.05, reply, 200, body, "text/plain", {"X-Later": "1"})
        else:
            reply(200, body, "text/plain", None)
        return None


async def _serve(app: App, read_timeout_s: float = 5.0) -> tuple[LeanHttpServer, int]:
    server = LeanHttpServer(app.handle, max_body=MAX_BODY, read_timeout_s=read_timeout_s,
                            refused=app.refused.append)
    await server.start("127.0.0.1", 0)
    return server, server.port


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    line = await asyncio.wait_for(reader.readline(), 5)
    status = int(line.split()[1])
    headers = {}
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b""):
            break
        k, v = h.decode().split(":", 1)
        headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return status, headers, body


def _run(coro):
    return asyncio.run(coro)


def test_keep_alive_and_pipelined_answers_in_request_order():
    async def main():
        app = App()
        server, port = await _serve(app)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        # three pipelined requests in one write; the first answers last
        w.write(b"POST /later HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na"
                b"POST /now HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nb"
                b"GET /now2 HTTP/1.1\r\nHost: x\r\n\r\n")
        got = [await _read_response(r) for _ in range(3)]
        assert [b for _, _, b in got] == [b"POST /later a", b"POST /now b", b"GET /now2 "]
        assert got[0][1]["x-later"] == "1"
        # chunked body, same connection
        w.write(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        assert (await _read_response(r))[2] == b"POST /c abcde"
        w.close()
        server.close()
    _run(main())


def test_expect_continue_connection_close_and_head():
    async def main():
        server, port = await _serve(App())
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        assert (await r.readline()).startswith(b"HTTP/1.1 100")
        await r.readline()
        w.write(b"hi")
        assert (await _read_response(r))[2] == b"POST /e hi"
        w.write(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n")
        line = await r.readline()
        assert line.startswith(b"HTTP/1.1 200")
        while (await r.readline()) != b"\r\n":
            pass
        w.write(b"GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, headers, body = await _read_response(r)
        assert status == 200 and headers["connection"] == "close" and body == b"GET /bye "
        assert await asyncio.wait_for(r.read(), 5) == b""  # then EOF
        server.close()
    _run(main())


@pytest.mark.parametrize("request_bytes, status", [
    (b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1) + b"x" * (MAX_BODY + 1), 413),
    (b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     + (b"100\r\n" + b"x" * 256 + b"\r\n") * 5 + b"0\r\n\r\n", 413),
    (b"GET /h HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 70_000 + b"\r\n\r\n", 431),
    (b"NOT HTTP AT ALL\r\n\r\n", 400),
])
def test_refusals_answer_then_close_and_the_server_keeps_serving(request_bytes, status):
    async def main():
        app = App()
        server, port = await _serve(app)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(request_bytes)
        got, headers, body = await _read_response(r)
        assert got == status and b"error" in body and headers["connection"] == "close"
        assert app.refused == [status]
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        w2.write(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await _read_response(r2))[0] == 200
        w.close()
        w2.close()
        server.close()
    _run(main())


def test_stalled_body_gets_408_and_handler_bug_gets_500():
    async def main():
        app = App()
        server, port = await _serve(app, read_timeout_s=0.3)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")  # 7 bytes never come
        status, _, body = await _read_response(r)
        assert status == 408 and b"error" in body
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        w2.write(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await _read_response(r2))[0] == 500
        assert (await _read_response(r2))[0] == 200  # the connection still serves
        w.close()
        w2.close()
        server.close()
    _run(main())


def test_client_gone_cancels_its_pending_requests():
    async def main():
        app = App()
        server, port = await _serve(app)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /never HTTP/1.1\r\nHost: x\r\n\r\nGET /never HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.1)
        assert server.pending() == 2
        w.close()
        await asyncio.sleep(0.2)
        assert app.cancelled == 2 and server.pending() == 0
        server.close()
    _run(main())


def test_a_connection_with_too_many_unanswered_requests_is_not_read_until_they_are_answered():
    async def main():
        app = App()
        server, port = await _serve(app)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(10):  # 200 requests that are never answered, in separate writes
            w.write(b"GET /never HTTP/1.1\r\nHost: x\r\n\r\n" * 20)
            await asyncio.sleep(0.02)
        held = server.pending()
        assert MAX_PIPELINED <= held < 200
        # another connection is served meanwhile, and pipelined answers still come in order
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        w2.write(b"".join(b"POST /later HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n%03d" % i for i in range(150)))
        bodies = [(await _read_response(r2))[2] for _ in range(150)]
        assert bodies == [b"POST /later %03d" % i for i in range(150)]
        w.close()
        w2.close()
        server.close()
    _run(main())


def test_after_stop_listening_open_requests_are_served_and_their_connections_closed():
    async def main():
        server, port = await _serve(App())
        busy_r, busy_w = await asyncio.open_connection("127.0.0.1", port)
        idle_r, idle_w = await asyncio.open_connection("127.0.0.1", port)
        busy_w.write(b"POST /later HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na")
        await asyncio.sleep(0.01)
        server.stop_listening()
        status, headers, body = await _read_response(busy_r)  # answered after the stop
        assert status == 200 and body == b"POST /later a" and headers["connection"] == "close"
        assert await asyncio.wait_for(busy_r.read(), 5) == b""
        assert await asyncio.wait_for(idle_r.read(), 5) == b""  # an idle one is closed at once
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        busy_w.close()
        idle_w.close()
        server.close()
    _run(main())
