"""The executor interface: where workers run, behind one narrow surface (vLLM's executor idea).

The router and the scheduler never know where a worker runs. They see
:class:`~superserve.serving.pool.WorkerHandle` slots and the
:class:`~superserve.serving.pool.WorkerRunner` calls (run a batch on a slot, kill a slot);
the server, the supervisor, the hot reload and the scaler see the rest of
:class:`Executor` (start, restart a slot, add and remove slots, stop). Every event comes back
through a :class:`~superserve.serving.pool.PoolListener` on the router's asyncio loop:
ready, done, failed, died. Two backends:

- ``local`` (:class:`~superserve.serving.pool.WorkerPool`): worker processes on this
  machine; batches cross in shared memory, a few bytes of message over a pipe.
- ``ray`` (:class:`~superserve.serving.ray_pool.RayWorkerPool`): one Ray actor per worker,
  spread over the cluster's nodes; batches and logits travel as numpy arrays, results are
  awaited as ObjectRefs on the same loop.
"""
from __future__ import annotations

import asyncio
from typing import Protocol

from superserve.serving.config import ServeConfig
from superserve.serving.model_info import ModelInfo
from superserve.serving.pool import PoolListener, WorkerHandle, WorkerPool, WorkerRunner

BACKENDS = ("local", "ray")


class Executor(WorkerRunner, Protocol):
    """A set of workers the server drives (see the module docstring)."""

    backend: str
    listener: PoolListener | None
    spares: list[WorkerHandle]

    def start(self, loop: asyncio.AbstractEventLoop, listener: PoolListener) -> None: ...
    def spawn(self, w: WorkerHandle) -> None: ...
    def promote(self, dead: WorkerHandle) -> WorkerHandle | None: ...
    def add_workers(self, n: int) -> list[WorkerHandle]: ...
    def remove_workers(self, ws: list[WorkerHandle]) -> None: ...
    async def stop_workers(self, ws: list[WorkerHandle], timeout_s: float = 5.0) -> None: ...
    async def stop(self, timeout_s: float = 5.0) -> None: ...
    def close(self) -> None: ...

    @property
    def num_ready(self) -> int: ...

    def describe(self) -> str: ...


def make_executor(info: ModelInfo, config: ServeConfig) -> Executor:
    """The configured backend's workers for ``info`` (not started)."""
    if config.backend == "ray":
        from superserve.serving.ray_pool import RayWorkerPool

        return RayWorkerPool(info, config)
    return WorkerPool(info, config)
