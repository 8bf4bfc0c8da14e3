"""Fixtures shared by the test files."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable

import pytest

from superserve.scheduling import make_policy
from superserve.scheduling.profile import LatencyProfile, SubnetProfile


def two_subnet_profile() -> LatencyProfile:
    """small: 2 ms + 1 ms/request; big: 4 ms + 2 ms/request; batches up to 4 (p99 = p50)."""
    small = SubnetProfile("small", 0.7, (3.0, 4.0, 5.0, 6.0), (3.0, 4.0, 5.0, 6.0))
    big = SubnetProfile("big", 0.9, (6.0, 8.0, 10.0, 12.0), (6.0, 8.0, 10.0, 12.0))
    return LatencyProfile((small, big))


@pytest.fixture
def tiny_profile() -> LatencyProfile:
    """Two SubNets whose timings are easy to add up by hand (see :func:`two_subnet_profile`)."""
    return two_subnet_profile()


class FakePool:
    """A worker pool without processes (the router's and the supervisor's side of it): every
    event is driven by hand, and what was asked of it is recorded."""

    def __init__(self, n: int) -> None:
        from superserve.serving.pool import WorkerHandle

        self.workers = [WorkerHandle(i, None, None, None, memoryview(bytearray(16 * 40))) for i in range(n)]
        self.runs: list[tuple[int, object, int]] = []  # (worker, RunBatch, rows)
        self.killed: list[int] = []
        self.spawned: list[int] = []

    def run(self, w, msg, rows) -> None:
        from superserve.serving.pool import WorkerState

        w.state = WorkerState.BUSY
        self.runs.append((w.index, msg, len(rows)))

    def kill(self, w) -> None:
        self.killed.append(w.index)

    def spawn(self, w) -> None:
        from superserve.serving.pool import WorkerState

        self.spawned.append(w.index)
        w.state = WorkerState.STARTING

    def promote(self, dead):
        return None  # no warm standby: every replacement is a restart

    @property
    def num_alive(self) -> int:
        return sum(w.alive for w in self.workers)


def make_fake_router(workers: int = 2, *, num_subnets: int = 4, quantile: str = "p50", queue_capacity: int = 64,
                     warm: bool = True, **router_kw: Any):
    """A Router on a synthetic profile (SlackFit) and a :class:`FakePool` of ``workers`` slots,
    on the running loop. ``warm``: every worker is ready and the router accepting (otherwise
    that is the caller's, e.g. through a supervisor)."""
    from superserve.serving.metrics import ServingMetrics
    from superserve.serving.model_info import ModelInfo
    from superserve.serving.pool import WorkerState
    from superserve.serving.router import Router

    profile = LatencyProfile.synthetic(num_subnets=num_subnets)
    pool = FakePool(workers)
    router = Router(ModelInfo("m", (1, 28, 28), 10, profile, None), make_policy("slackfit", profile, quantile=quantile),
                    ServingMetrics({s.id: s.accuracy for s in profile.subnets}, 16), queue_capacity=queue_capacity,
                    pool=pool, loop=asyncio.get_running_loop(), **router_kw)
    if warm:
        for w in pool.workers:
            w.state = WorkerState.IDLE
            router.worker_ready(w)
        router.accepting = True
    return router, pool


@pytest.fixture
def fake_router() -> Callable[..., Any]:
    """:func:`make_fake_router`, called inside the test's event loop."""
    return make_fake_router


@pytest.fixture
def tls_pair(tmp_path) -> tuple[Path, Path]:
    """A throwaway certificate and key for 127.0.0.1 / localhost, made with the openssl CLI."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    return cert, key
