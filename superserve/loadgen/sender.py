"""The open-loop sender: issues requests at their scheduled times, never waiting on answers.

One asyncio loop per process. The schedule is absolute: request k is due at
``start_at + arrivals[k]`` on the machine-wide monotonic clock (CLOCK_MONOTONIC, shared by
every process), so several sender processes can split one trace and still agree on time.
A request is issued as soon as it is due, whether or not earlier ones were answered (no
coordinated omission). When the loop cannot keep up, requests go out late; the lateness is
recorded as send lag and the latency is still measured from the scheduled time, so a slow
client makes results look worse, never better.
"""
from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit
from dataclasses import dataclass, field
from typing import Any, Callable

import aiohttp
import numpy as np

from superserve.loadgen.kserve import HEADER_LENGTH, decode_reply
from superserve.loadgen.rawhttp import RawHttpClient, build_request
from superserve.loadgen.records import STATUS_CONN_ERROR, STATUS_TIMEOUT

# Issue at most this many due requests before letting the loop run answers: when the client
# lags, a backlog of thousands would otherwise delay every answer's timestamp.
_ISSUE_CHUNK = 64


@dataclass(frozen=True)
class SenderConfig:
    """Where and how to send (everything a sender process needs besides the payloads)."""

    base_url: str  # http://host:port
    path: str  # /v2/models/{model}/infer
    timeout_s: float = 10.0  # per request; a request unanswered by then counts as TIMEOUT
    connections: int = 512  # connection pool size (keep-alive); open-loop needs rate x latency
    warm_connections: int = 16  # opened before the start so the first burst does not pay handshakes
    health_path: str = "/v2/health/ready"
    transport: str = "raw"  # "raw" (loadgen.rawhttp: lean, default) or "aiohttp"
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request, e.g. Authorization


@dataclass
class ShardResult:
    """Raw observations of one sender, in the order of its ``indices``."""

    indices: np.ndarray
    lag_s: list[float]
    latency_s: list[float]
    status: list[int]
    params: list[dict[str, Any] | None]
    predicted: list[int]
    errors: dict[str, int] = field(default_factory=dict)  # error text -> count (first few kinds)


@dataclass
class Counters:
    """Live progress of one sender (read by the progress bar)."""

    issued: int = 0
    answered: int = 0
    ok: int = 0


async def _warm(session: aiohttp.ClientSession, cfg: SenderConfig) -> None:
    """Open ``warm_connections`` keep-alive connections with cheap health calls."""
    async def ping() -> None:
        try:
            async with session.get(cfg.base_url + cfg.health_path) as r:
                await r.read()
        except aiohttp.ClientError:
            pass
    await asyncio.gather(*(ping() for _ in range(max(0, cfg.warm_connections))))


def make_session(cfg: SenderConfig) -> aiohttp.ClientSession:
    # limit: enough connections for rate x latency in flight; a request waiting for a free
    # connection still has its latency counted from its scheduled time.
    conn = aiohttp.TCPConnector(limit=cfg.connections, limit_per_host=cfg.connections,
                                keepalive_timeout=60.0, ttl_dns_cache=None, use_dns_cache=True)
    return aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=cfg.timeout_s),
                                 skip_auto_headers=("User-Agent", "Accept-Encoding"))


async def send_schedule(cfg: SenderConfig, arrivals: np.ndarray, indices: np.ndarray,
                        bodies: list[bytes], header_lengths: list[int], start_at: float | None,
                        counters: Counters | None = None,
                        on_ready: Callable[[], float] | None = None) -> ShardResult:
    """Send request ``indices[k]`` (body ``indices[k] mod len(bodies)``) at
    ``start_at + arrivals[k]`` (monotonic seconds) and collect what came back.

    ``start_at`` None: ``on_ready()`` is called after warm-up and returns it (multi-process
    start barrier); if that is None too, the schedule starts 50 ms after warm-up.
    """
    if cfg.transport == "raw":
        return await _send_raw(cfg, arrivals, indices, bodies, header_lengths, start_at, counters, on_ready)
    if cfg.transport == "aiohttp":
        return await _send_aiohttp(cfg, arrivals, indices, bodies, header_lengths, start_at, counters,
                                   on_ready=on_ready)
    raise ValueError(f"transport must be 'raw' or 'aiohttp', not {cfg.transport!r}")


async def _send_raw(cfg: SenderConfig, arrivals: np.ndarray, indices: np.ndarray, bodies: list[bytes],
                    header_lengths: list[int], start_at: float | None, counters: Counters | None,
                    on_ready: Callable[[], float] | None) -> ShardResult:
    n = int(arrivals.size)
    res = ShardResult(np.asarray(indices), [float("nan")] * n, [float("nan")] * n, [0] * n, [None] * n, [-1] * n)
    counters = counters if counters is not None else Counters()
    url = urlsplit(cfg.base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    requests = [build_request(host, port, cfg.path, b, {**cfg.headers, HEADER_LENGTH: str(h), "Content-Type": "application/octet-stream"})
                for b, h in zip(bodies, header_lengths)]
    nb = len(requests)
    arr = arrivals.tolist()
    idx = [int(i) % nb for i in indices.tolist()]
    start = [0.0]
    finished = asyncio.Event()
    remaining = [n]

    def settle() -> None:
        counters.answered += 1
        remaining[0] -= 1
        if remaining[0] == 0:
            finished.set()

    def on_answer(k: int, status: int, ihl: int, body: bytes, t: float) -> None:
        res.latency_s[k] = t - (start[0] + arr[k])
        res.status[k] = status
        if status == 200:
            reply = decode_reply(body, ihl if ihl >= 0 else None)
            res.params[k] = reply.parameters
            res.predicted[k] = reply.predicted
            counters.ok += 1
        else:
            _note(res.errors, f"{status}: {body[:120].decode(errors='replace')}")
        settle()

    def on_failure(k: int, kind: str, detail: str, t: float) -> None:
        if kind == "timeout":
            res.status[k] = STATUS_TIMEOUT
        else:
            res.status[k] = STATUS_CONN_ERROR
            res.latency_s[k] = t - (start[0] + arr[k])
        _note(res.errors, f"{kind}: {detail}"[:160])
        settle()

    client = RawHttpClient(host, port, on_answer, on_failure, cfg.connections)
    clock = time.monotonic
    try:
        await client.open(cfg.warm_connections)
        if start_at is None:
            start_at = on_ready() if on_ready is not None else None
            start_at = start_at if start_at is not None else clock() + 0.05
        start[0] = start_at

        async def sweep() -> None:  # timeouts: one periodic check instead of a timer per request
            while True:
                await asyncio.sleep(min(0.1, cfg.timeout_s / 4))
                client.expire(clock(), cfg.timeout_s, lambda k: start_at + arr[k])
        sweeper = asyncio.get_running_loop().create_task(sweep())
        if n == 0:
            finished.set()

        def issue(k: int, due: float) -> None:
            res.lag_s[k] = clock() - due
            client.submit(k, requests[idx[k]])

        await pace(arr, start_at, issue, on_progress=lambda k: setattr(counters, "issued", k))
        await finished.wait()
        sweeper.cancel()
    finally:
        client.close()
    return res


async def pace(arrivals: Any, start_at: float, issue: Callable[[int, float], None], *, chunk: int = _ISSUE_CHUNK,
               on_progress: Callable[[int], None] | None = None) -> None:
    """Open loop: ``issue(k, due)`` for request k at its due time ``start_at + arrivals[k]``
    (monotonic clock), whether or not earlier ones were answered. Every request already due is
    issued per wake-up (timer granularity is ~1 ms; at thousands of requests per second several
    are due at once), at most ``chunk`` before yielding to the loop; ``on_progress(k)`` after
    each wake-up with the number issued so far."""
    clock, n, k = time.monotonic, len(arrivals), 0
    while k < n:
        wait = start_at + float(arrivals[k]) - clock()
        if wait > 0:
            await asyncio.sleep(wait)
        issued, now = 0, clock()
        while k < n and issued < chunk and start_at + float(arrivals[k]) <= now:
            issue(k, start_at + float(arrivals[k]))
            k += 1
            issued += 1
        if on_progress is not None:
            on_progress(k)
        if issued >= chunk:
            await asyncio.sleep(0)


def _note(errors: dict[str, int], key: str) -> None:
    """Count an error kind (the first few distinct texts only: a failing run has thousands)."""
    if key in errors or len(errors) < 8:
        errors[key] = errors.get(key, 0) + 1


async def _send_aiohttp(cfg: SenderConfig, arrivals: np.ndarray, indices: np.ndarray,
                        bodies: list[bytes], header_lengths: list[int], start_at: float | None,
                        counters: Counters | None = None,
                        session: aiohttp.ClientSession | None = None,
                        on_ready: Callable[[], float] | None = None) -> ShardResult:
    """The same contract over aiohttp (a Task and a ClientResponse per request)."""
    n = int(arrivals.size)
    res = ShardResult(np.asarray(indices), [float("nan")] * n, [float("nan")] * n, [0] * n, [None] * n, [-1] * n)
    counters = counters if counters is not None else Counters()
    own = session is None
    session = session or make_session(cfg)
    url = cfg.base_url + cfg.path
    nb = len(bodies)
    headers = [{**cfg.headers, HEADER_LENGTH: str(h), "Content-Type": "application/octet-stream"} for h in header_lengths]
    clock = time.monotonic
    pending: set[asyncio.Task] = set()

    async def one(k: int, due: float) -> None:
        res.lag_s[k] = clock() - due
        j = int(indices[k]) % nb
        try:
            async with session.post(url, data=bodies[j], headers=headers[j]) as r:
                body = await r.read()
                status = r.status
                hl = r.headers.get(HEADER_LENGTH)
            res.latency_s[k] = clock() - due
            res.status[k] = status
            if status == 200:
                reply = decode_reply(body, int(hl) if hl else None)
                res.params[k] = reply.parameters
                res.predicted[k] = reply.predicted
                counters.ok += 1
            else:
                _note(res.errors, f"{status}: {body[:120].decode(errors='replace')}")
        except asyncio.TimeoutError:
            res.status[k] = STATUS_TIMEOUT
        except (aiohttp.ClientError, OSError) as e:
            res.latency_s[k] = clock() - due
            res.status[k] = STATUS_CONN_ERROR
            _note(res.errors, f"{type(e).__name__}: {e}"[:120])
        counters.answered += 1

    try:
        await _warm(session, cfg)
        if start_at is None:
            start_at = on_ready() if on_ready is not None else None
            start_at = start_at if start_at is not None else clock() + 0.05
        loop = asyncio.get_running_loop()

        def issue(k: int, due: float) -> None:
            t = loop.create_task(one(k, due))
            pending.add(t)
            t.add_done_callback(pending.discard)

        await pace(arrivals, start_at, issue, on_progress=lambda k: setattr(counters, "issued", k))
        if pending:
            await asyncio.gather(*list(pending))
    finally:
        if own:
            await session.close()
    return res
