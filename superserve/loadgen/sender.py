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
from dataclasses import dataclass, field
from typing import Any, Callable

import aiohttp
import numpy as np

from superserve.loadgen.kserve import HEADER_LENGTH, decode_reply
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
                        session: aiohttp.ClientSession | None = None,
                        on_ready: Callable[[], float] | None = None) -> ShardResult:
    """Send request ``indices[k]`` (body ``indices[k] mod len(bodies)``) at
    ``start_at + arrivals[k]`` (monotonic seconds) and collect what came back.

    ``start_at`` None: ``on_ready()`` is called after warm-up and returns it (multi-process
    start barrier); if that is None too, the schedule starts 50 ms after warm-up.
    """
    n = int(arrivals.size)
    res = ShardResult(np.asarray(indices), [float("nan")] * n, [float("nan")] * n, [0] * n, [None] * n, [-1] * n)
    counters = counters if counters is not None else Counters()
    own = session is None
    session = session or make_session(cfg)
    url = cfg.base_url + cfg.path
    nb = len(bodies)
    headers = [{HEADER_LENGTH: str(h), "Content-Type": "application/octet-stream"} for h in header_lengths]
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
            elif len(res.errors) < 8 or body[:120].decode(errors="replace") in res.errors:
                key = f"{status}: {body[:120].decode(errors='replace')}"
                res.errors[key] = res.errors.get(key, 0) + 1
        except asyncio.TimeoutError:
            res.status[k] = STATUS_TIMEOUT
        except (aiohttp.ClientError, OSError) as e:
            res.latency_s[k] = clock() - due
            res.status[k] = STATUS_CONN_ERROR
            key = f"{type(e).__name__}: {e}"[:120]
            res.errors[key] = res.errors.get(key, 0) + 1
        counters.answered += 1

    try:
        await _warm(session, cfg)
        if start_at is None:
            start_at = on_ready() if on_ready is not None else None
            start_at = start_at if start_at is not None else clock() + 0.05
        loop = asyncio.get_running_loop()
        k = 0
        while k < n:
            due = start_at + float(arrivals[k])
            wait = due - clock()
            if wait > 0:
                await asyncio.sleep(wait)
            issued = 0
            now = clock()
            # Issue everything already due (timer granularity is ~1 ms; at thousands of
            # requests per second several are due per wake-up).
            while k < n and issued < _ISSUE_CHUNK and start_at + float(arrivals[k]) <= now:
                t = loop.create_task(one(k, start_at + float(arrivals[k])))
                pending.add(t)
                t.add_done_callback(pending.discard)
                k += 1
                issued += 1
            counters.issued = k
            if issued >= _ISSUE_CHUNK:
                await asyncio.sleep(0)
        if pending:
            await asyncio.gather(*list(pending))
    finally:
        if own:
            await session.close()
    return res
