"""The ``ray`` executor: one Ray actor per worker, spread over a Ray cluster's nodes.

Same contract as the local :class:`~superserve.serving.pool.WorkerPool` (see
superserve/serving/executor.py), so the router, the supervisor, the hot reload and the
scaler drive it unchanged:

- **Start.** The router process connects to the cluster (``ray.init(address=...)``; a
  driver, never a node) and puts the bundle's two safetensors files in the object store
  once. Each slot gets a :class:`~superserve.serving.ray_actor.SupernetActor` with the
  ``SPREAD`` scheduling strategy (workers go to different nodes while there are nodes to
  spread over), ``threads_per_worker`` CPUs and no Ray-side restarts: restarts are the
  supervisor's, with its back-off and limits, as for a local worker. The actor loads and
  warms every SubNet in its constructor; its ``ready()`` answer is ``worker_ready``.
- **A batch** is one ``run.remote(subnet_index, rows)`` call with the rows as one float32
  numpy array. The ObjectRef is awaited on the router's loop; its logits are copied into the
  handle's output buffer, where the router reads a local worker's from its slab, and
  ``batch_done`` follows. An exception raised by the model is ``batch_failed`` (the actor
  keeps serving).
- **Death.** Every actor has one ``watch()`` call outstanding that never returns while it
  lives; the actor's death (process killed or crashed, node lost) fails that call and every
  call in flight, and the slot is reported ``worker_died`` once: the router re-queues its
  batch, the supervisor starts a new actor for the slot (SPREAD places it on a live node).
  Ray's reason decides the exit code the router sees: killed on purpose or with its node
  (``ray.kill``, node death) reads as killed from outside (None: the batch is re-queued as
  it was); any other death as a crash (1: its requests re-run alone, so a poison input
  costs at most ``request_max_deaths`` actors).
"""
from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from superserve.bundle_layout import BundleLayout
from superserve.serving.config import ServeConfig
from superserve.serving.messages import BatchDone, BatchFailed, RunBatch
from superserve.serving.model_info import ModelInfo
from superserve.serving.pool import PoolListener, WorkerCounts, WorkerHandle, WorkerState, worker_spec

NAMESPACE = "superserve"
KILLED_EXIT = None  # what a worker killed from outside reads as (router._KILLED)
CRASH_EXIT = 1


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RuntimeError("--backend ray needs Ray installed here and on every node: "
                           "pip install 'superserve[ray]' (or pip install ray)") from None
    return ray


def connect(address: str | None) -> Any:
    """Connect this process to the Ray cluster at ``address`` ('auto': the one started on this
    machine with `ray start`; HOST:PORT; 'local': a fresh single-node instance of this
    process's own, bound to 127.0.0.1). Keeps this process's SIGTERM handling (ray.init
    replaces it)."""
    private = address in (None, "", "local")
    resolved = "" if private else _resolve(address)
    if not private:
        # ray.init retries an unreachable cluster for minutes, blocking the server's loop (and
        # its SIGTERM): a plain TCP connect says at once whether anything listens there.
        _check_reachable(address, resolved)
    loopback = private or _is_loopback(resolved)
    if loopback:
        # Ray rewrites a loopback cluster address to this machine's outward IP before it
        # connects (it assumes clusters span machines); a cluster bound to 127.0.0.1 is not
        # there. This setting (read once, when ray is imported) keeps loopback loopback.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = import_ray()
    if ray.is_initialized():
        return ray
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    common: dict[str, Any] = dict(namespace=NAMESPACE, log_to_driver=False, configure_logging=False)
    if loopback:
        common["_node_ip_address"] = "127.0.0.1"
    try:
        if private:
            ray.init(include_dashboard=False, **common)
        else:
            ray.init(address=address, **common)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RuntimeError(f"cannot connect to the Ray cluster at {address!r}: {exc}; start one with "
                           "`ray start --head --node-ip-address 127.0.0.1` (see docs/ray.md)") from None
    finally:
        for s, h in saved.items():
            if h is not None:
                signal.signal(s, h)
    return ray


def _resolve(address: str | None) -> str:
    """HOST:PORT of ``address``; for 'auto', Ray's own choice: RAY_ADDRESS, else the cluster
    `ray start` last began on this machine (its address file)."""
    if address not in (None, "", "auto"):
        return str(address)
    env = os.environ.get("RAY_ADDRESS")
    if env:
        return env
    try:
        return Path(tempfile.gettempdir(), "ray", "ray_current_cluster").read_text().strip()
    except OSError:
        return ""


def _check_reachable(address: str | None, resolved: str, timeout_s: float = 5.0) -> None:
    host, _, port = resolved.rpartition(":")
    if not host or not port.isdigit():
        raise RuntimeError(f"no Ray cluster found at {address!r} (set --address HOST:PORT, or start one on this "
                           "machine with `ray start --head --node-ip-address 127.0.0.1`; see docs/ray.md)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise RuntimeError(f"cannot reach the Ray cluster at {resolved} ({exc}); is `ray start --head` running "
                           "there? (see docs/ray.md)") from None


def _is_loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]") if ":" in address else address
    if "://" in address:
        return False
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exit_code_of(exc: BaseException) -> int | None:
    """The exit code the router sees for an actor that died with Ray error ``exc``."""
    text = str(exc)
    if "ray.kill" in text or "node" in text.lower() and ("died" in text.lower() or "dead" in text.lower()) \
            and "worker process" not in text:
        return KILLED_EXIT
    return CRASH_EXIT


@dataclass(eq=False)
class RayWorkerHandle(WorkerHandle):
    actor: Any = None
    generation: int = 0  # bumped per actor: results of a dead actor's calls are ignored
    node_id: str = ""
    host: str = ""
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    killed_here: bool = False  # kill() or stop(): its death is not a crash


class RayWorkerPool(WorkerCounts):
    backend = "ray"

    def __init__(self, info: ModelInfo, config: ServeConfig) -> None:
        """Slots only; the cluster is joined and the actors created by :meth:`start`."""
        if config.standby_workers:
            raise ValueError("standby_workers is not supported with --backend ray (a dead actor's slot is "
                             "refilled by a new actor); set it to 0")
        self.info = info
        self.config = config
        self.listener: PoolListener | None = None
        self.max_batch = info.profile.max_batch
        self._loop: asyncio.AbstractEventLoop | None = None
        self.workers: list[WorkerHandle] = [self._handle(i) for i in range(config.workers)]
        self.spares: list[WorkerHandle] = []
        self._stopping = False
        self._ray: Any = None
        self._actor_cls: Any = None
        self._bundle_refs: tuple[Any, Any] | None = None
        c, h, w = info.input_shape
        self._row_shape = (c, h, w)

    def _handle(self, index: int) -> RayWorkerHandle:
        out = memoryview(bytearray(self.max_batch * self.info.output_bytes))
        return RayWorkerHandle(index, None, None, memoryview(b""), out)

    # --- lifecycle -----------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop, listener: PoolListener) -> None:
        self._loop, self.listener = loop, listener
        ray = self._ray = connect(self.config.ray_address)
        from superserve.serving.ray_actor import SupernetActor

        self._actor_cls = SupernetActor
        layout = BundleLayout(self.info.bundle)
        # Bytes as uint8 arrays: Ray ships numpy buffers out of band; the actor writes them back
        # to files and loads them with safetensors.
        self._bundle_refs = (ray.put(np.fromfile(layout.weights, dtype=np.uint8)),
                             ray.put(np.fromfile(layout.norm, dtype=np.uint8)))
        for w in self.workers:
            self.spawn(w)

    def spawn(self, w: WorkerHandle) -> None:
        """(Re)create the actor of slot ``w``; ``worker_ready`` follows once it is warm."""
        assert isinstance(w, RayWorkerHandle) and self._loop is not None and self._bundle_refs is not None
        self._drop_actor(w)
        spec = worker_spec(self.info, self.config, w)
        w.generation += 1
        w.killed_here, w.death = False, ""
        w.actor = self._actor_cls.options(
            scheduling_strategy="SPREAD", num_cpus=self.config.threads_per_worker, max_restarts=0,
            max_task_retries=0, name=f"superserve-worker-{w.index}-{w.generation}-{id(self):x}",
        ).remote(spec.to_json(), *self._bundle_refs)
        w.state, w.exitcode, w.started_at, w.pid = WorkerState.STARTING, None, time.monotonic(), None
        self._track(w, self._ready_then_watch(w, w.generation, w.actor))

    def _track(self, w: RayWorkerHandle, coro: Any) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        w.tasks.add(task)
        task.add_done_callback(w.tasks.discard)

    async def _ready_then_watch(self, w: RayWorkerHandle, gen: int, actor: Any) -> None:
        ray = self._ray
        try:
            info = await actor.ready.remote()
        except ray.exceptions.RayError as exc:
            self._died(w, gen, exc)
            return
        if gen != w.generation or not w.alive:
            return
        w.pid, w.node_id, w.host = info["pid"], info["node_id"], info["host"]
        w.warmup_s = info["warmup_s"]
        w.startup = {"spawn_s": round(max(0.0, info["entered_at"] - w.started_at), 3)
                     if info["host"] == _hostname() else None,
                     "import_s": round(info["import_s"], 3), "load_s": round(info["load_s"], 3),
                     "warm_up_s": round(info["warmup_s"] - info["load_s"], 3),
                     "total_s": round(time.monotonic() - w.started_at, 3), "node_id": info["node_id"],
                     "host": info["host"]}
        w.state = WorkerState.IDLE
        if self.listener is not None:
            self.listener.worker_ready(w)
        try:
            await actor.watch.remote()  # returns only when the actor is gone
        except ray.exceptions.RayError as exc:
            self._died(w, gen, exc)
            return
        self._died(w, gen, RuntimeError("the actor's watch call returned"))

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Kill every actor (the router has drained its work by now)."""
        self._stopping = True
        await self.stop_workers(list(self.workers), timeout_s)

    def close(self) -> None:
        """Nothing held here after :meth:`stop` (the driver disconnects at process exit)."""
        for w in self.workers:
            w.output_view.release()

    # --- work ----------------------------------------------------------------------------
    def run(self, w: WorkerHandle, msg: RunBatch, rows: Sequence[bytes]) -> None:
        """Send ``rows`` (float32 inputs, one per request; a probe batch has none) to the
        actor of ``w`` as one array of ``msg.batch_size`` rows."""
        assert isinstance(w, RayWorkerHandle)
        n = msg.batch_size
        if len(rows) == n:
            batch = np.frombuffer(b"".join(rows), dtype=np.float32).reshape(n, *self._row_shape)
        else:
            batch = np.zeros((n, *self._row_shape), np.float32)
            if rows:
                batch[:len(rows)] = np.frombuffer(b"".join(rows), np.float32).reshape(len(rows), *self._row_shape)
        w.state = WorkerState.BUSY
        try:
            ref = w.actor.run.remote(msg.subnet_index, batch)
        except self._ray.exceptions.RayError as exc:  # submitting to a dead actor
            self._died(w, w.generation, exc)
            return
        self._track(w, self._result(w, w.generation, msg.seq, ref))

    async def _result(self, w: RayWorkerHandle, gen: int, seq: int, ref: Any) -> None:
        ray = self._ray
        try:
            logits, compute_ms = await ref
        except ray.exceptions.RayActorError as exc:
            self._died(w, gen, exc)
            return
        except ray.exceptions.RayError as exc:  # the model raised: the actor lives on
            if gen == w.generation and w.state is WorkerState.BUSY and self.listener is not None:
                w.state = WorkerState.IDLE
                self.listener.batch_failed(w, BatchFailed(seq, _first_line(exc)))
            return
        if gen != w.generation or w.state is not WorkerState.BUSY or self.listener is None:
            return
        data = np.ascontiguousarray(logits, dtype=np.float32).tobytes()
        w.output_view[:len(data)] = data
        w.state = WorkerState.IDLE
        self.listener.batch_done(w, BatchDone(seq, float(compute_ms)))

    def kill(self, w: WorkerHandle) -> None:
        """Kill the actor of ``w`` (a hung one; tests); its death is reported as usual."""
        assert isinstance(w, RayWorkerHandle)
        if w.actor is not None and w.alive:
            w.killed_here = True
            self._ray.kill(w.actor, no_restart=True)

    def _died(self, w: RayWorkerHandle, gen: int, exc: BaseException) -> None:
        if gen != w.generation or not w.alive:
            return  # an earlier actor of this slot, or already reported
        w.state = WorkerState.DEAD
        w.deaths += 1
        w.exitcode = KILLED_EXIT if w.killed_here else exit_code_of(exc)
        w.death = _first_line(exc)
        self._drop_actor(w, keep_task=asyncio.current_task())
        if self.listener is not None and not self._stopping:
            self.listener.worker_died(w)

    def _drop_actor(self, w: RayWorkerHandle, keep_task: Any = None) -> None:
        """Forget (and make sure of the end of) the slot's current actor."""
        for t in list(w.tasks):
            if t is not keep_task:
                t.cancel()
        if w.actor is not None:
            try:
                self._ray.kill(w.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
            w.actor = None

    # --- scaling -------------------------------------------------------------------------
    def add_workers(self, n: int) -> list[WorkerHandle]:
        new: list[WorkerHandle] = [self._handle(len(self.workers) + k) for k in range(n)]
        self.workers.extend(new)
        for w in new:
            self.spawn(w)
        return new

    def remove_workers(self, ws: list[WorkerHandle]) -> None:
        gone = set(ws)
        self.workers = [w for w in self.workers if w not in gone]
        assert all(w.index == i for i, w in enumerate(self.workers)), "remove the last slots"

    async def stop_workers(self, ws: list[WorkerHandle], timeout_s: float = 5.0) -> None:
        for w in ws:
            assert isinstance(w, RayWorkerHandle)
            w.killed_here = True
            w.generation += 1  # its pending calls' outcomes are ignored from now on
            w.state = WorkerState.STOPPED
            self._drop_actor(w)

    # --- standbys: none with Ray -----------------------------------------------------------
    def promote(self, dead: WorkerHandle) -> WorkerHandle | None:
        return None

    # --- inspection ----------------------------------------------------------------------
    def describe(self) -> str:
        nodes = {getattr(w, "node_id", "") for w in self.workers if getattr(w, "node_id", "")}
        return f"{len(self.workers)} Ray actor(s) on {len(nodes)} node(s)"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


def _hostname() -> str:
    return socket.gethostname()
