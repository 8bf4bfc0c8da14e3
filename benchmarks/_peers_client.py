"""The one open-loop client of benchmarks/peers.py: Poisson arrivals over aiohttp, the same
for every system (superserve, LitServe, Ray Serve), JSON bodies, one URL.

superserve's own load client (superserve/loadgen/) speaks KServe v2 with the binary-data
extension and decodes KServe replies, so it cannot drive a peer's JSON API; this is a small
generic one instead. Request k is due at ``start + arrivals[k]`` and is issued then whether or
not earlier ones were answered (no coordinated omission); its latency is measured from that
scheduled send time, so a client that falls behind makes every system look worse, never
better. A request is *attained* when it is answered with HTTP 200 within the SLO of its
scheduled send time.
"""
from __future__ import annotations

import asyncio
import gc
import time
from dataclasses import dataclass, field

import aiohttp
import numpy as np

from superserve.loadgen.sender import pace


@dataclass
class RunResult:
    rate: float  # offered requests/s
    duration_s: float
    sent: int
    ok: int  # HTTP 200
    attained: int  # HTTP 200 within the SLO of the scheduled send time
    latency_ms: list[float]  # of every answered request (any status), from its scheduled send time
    max_lag_ms: float  # the client's worst lateness issuing a request (its own health)
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def attainment(self) -> float:
        return self.attained / self.sent if self.sent else 0.0

    def summary(self) -> dict:
        lat = np.asarray(self.latency_ms) if self.latency_ms else np.asarray([np.nan])
        return {"rate": round(self.rate, 1), "duration_s": self.duration_s, "sent": self.sent, "ok": self.ok,
                "attainment": round(self.attainment, 5), "p50_ms": round(float(np.nanpercentile(lat, 50)), 2),
                "p99_ms": round(float(np.nanpercentile(lat, 99)), 2), "max_lag_ms": round(self.max_lag_ms, 2),
                **({"errors": dict(list(self.errors.items())[:4])} if self.errors else {})}


def poisson_arrivals(rate: float, duration_s: float, seed: int) -> np.ndarray:
    """Arrival offsets (s) of a Poisson process of ``rate``/s over ``duration_s``."""
    rng = np.random.default_rng(seed)
    n = max(1, int(rate * duration_s * 1.2) + 20)
    t = np.cumsum(rng.exponential(1.0 / rate, size=n))
    while t[-1] < duration_s:  # rare: extend
        t = np.concatenate([t, t[-1] + np.cumsum(rng.exponential(1.0 / rate, size=n))])
    return t[t < duration_s]


async def open_loop(url: str, bodies: list[bytes], rate: float, duration_s: float, slo_ms: float, *,
                    headers: dict[str, str] | None = None, seed: int = 0, timeout_s: float = 10.0,
                    warm: int = 16) -> RunResult:
    """Send Poisson(``rate``) POSTs of ``bodies`` (round robin) to ``url`` for ``duration_s``."""
    arrivals = poisson_arrivals(rate, duration_s, seed)
    n = int(arrivals.size)
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    lat: list[float] = [float("nan")] * n
    status: list[int] = [0] * n
    errors: dict[str, int] = {}
    conn = aiohttp.TCPConnector(limit=2048, limit_per_host=2048, keepalive_timeout=60.0)
    clock = time.monotonic
    max_lag = [0.0]
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=timeout_s),
                                     skip_auto_headers=("User-Agent",)) as session:
        async def one(k: int, due: float) -> None:
            lag = clock() - due
            if lag > max_lag[0]:
                max_lag[0] = lag
            try:
                async with session.post(url, data=bodies[k % len(bodies)], headers=hdrs) as r:
                    body = await r.read()
                    status[k] = r.status
                lat[k] = (clock() - due) * 1000.0
                if r.status != 200:
                    key = f"{r.status}: " + "".join(c for c in body[:48].decode(errors='replace')
                                                    if not c.isdigit())  # one key per kind
                    errors[key] = errors.get(key, 0) + 1
            except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as exc:
                key = type(exc).__name__
                errors[key] = errors.get(key, 0) + 1

        # Warm keep-alive connections (not counted).
        await asyncio.gather(*(one_warm(session, url, bodies[i % len(bodies)], hdrs) for i in range(warm)))
        # No garbage collection while the run is timed: in a process holding a loaded SuperNet
        # (the raw-rate measurement) a full collection stalled this loop 20-80 ms, about one
        # run in three, which the SLO then charged to whichever system was being measured.
        gc.collect()
        gc.freeze()
        gc.disable()
        try:
            await _issue(one, arrivals)
        finally:
            gc.enable()
            gc.unfreeze()
    answered = [x for x in lat if x == x]
    ok = sum(1 for s in status if s == 200)
    attained = sum(1 for s, x in zip(status, lat) if s == 200 and x <= slo_ms)
    return RunResult(rate, duration_s, n, ok, attained, answered, max_lag[0] * 1000.0, errors)


async def _issue(one, arrivals: np.ndarray) -> None:
    """Start request k at its due time (``one(k, due)``, open loop), then wait for them all."""
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task] = []
    await pace(arrivals, time.monotonic() + 0.05, lambda k, due: tasks.append(loop.create_task(one(k, due))))
    await asyncio.gather(*tasks)


async def one_warm(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> None:
    try:
        async with session.post(url, data=body, headers=headers) as r:
            await r.read()
    except (asyncio.TimeoutError, aiohttp.ClientError, OSError):
        pass


async def settle(url: str, body: bytes, slo_ms: float, *, headers: dict[str, str] | None = None,
                 max_wait_s: float = 30.0) -> float:
    """After a run, wait until the server answers a lone request within the SLO twice in a row
    (an overloaded peer without shedding still works through its backlog). Returns seconds waited."""
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    t0 = time.monotonic()
    good = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=max_wait_s)) as session:
        while time.monotonic() - t0 < max_wait_s and good < 2:
            s = time.monotonic()
            try:
                async with session.post(url, data=body, headers=hdrs) as r:
                    await r.read()
                    fine = r.status == 200 and (time.monotonic() - s) * 1000.0 <= slo_ms
            except (asyncio.TimeoutError, aiohttp.ClientError, OSError):
                fine = False
            good = good + 1 if fine else 0
            await asyncio.sleep(0.2)
    return time.monotonic() - t0
