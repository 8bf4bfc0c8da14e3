"""The router's side of the worker processes: spawn, shared-memory slabs, pipes, death.

A :class:`WorkerPool` owns one :class:`WorkerHandle` per slot. It never decides anything:
it hands a batch to a named worker and reports back through a :class:`PoolListener`
(ready, done, failed, died). The router implements the listener. Everything runs on the
router's asyncio loop; the pipes and the process sentinels are watched with
``loop.add_reader``, so a worker's death (crash, kill -9) is seen the moment its sentinel
becomes readable, never by a timeout.
"""
from __future__ import annotations

import asyncio
import enum
import multiprocessing as mp
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Protocol, Sequence

from superserve.bundle_layout import BundleLayout
from superserve.device import worker_device
from superserve.serving.config import ServeConfig
from superserve.serving.messages import (BatchDone, BatchFailed, RunBatch, Stop, WorkerReady, decode,
                                         encode)
from superserve.serving.model_info import ModelInfo
from superserve.serving.worker import WorkerSpec, worker_main


class WorkerState(enum.Enum):
    STARTING = "starting"  # spawned, loading and warming
    IDLE = "idle"
    BUSY = "busy"
    DEAD = "dead"
    STOPPED = "stopped"  # asked to stop (shutdown)


class PoolListener(Protocol):
    """What the pool reports (the supervisor implements it and forwards to the router)."""

    def worker_ready(self, worker: "WorkerHandle") -> None: ...
    def batch_done(self, worker: "WorkerHandle", msg: BatchDone) -> None: ...
    def batch_failed(self, worker: "WorkerHandle", msg: BatchFailed) -> None: ...
    def worker_died(self, worker: "WorkerHandle") -> None: ...
    def standby_ready(self, worker: "WorkerHandle") -> None: ...


class WorkerRunner(Protocol):
    """The part of the pool the router uses: its slots, and run / kill on one of them."""

    workers: list["WorkerHandle"]

    @property
    def num_alive(self) -> int: ...
    def run(self, w: "WorkerHandle", msg: RunBatch, rows: Sequence[bytes]) -> None: ...
    def kill(self, w: "WorkerHandle") -> None: ...


@dataclass(eq=False)
class WorkerHandle:
    index: int
    input_shm: SharedMemory | None  # the slabs of a local worker process (None: a Ray actor)
    output_shm: SharedMemory | None
    input_view: memoryview  # the router writes request rows here
    output_view: memoryview  # and reads logits from here (a Ray actor's are copied in)
    process: mp.process.BaseProcess | None = None
    conn: Connection | None = None  # the router's end of the pipe
    state: WorkerState = WorkerState.STARTING
    pid: int | None = None
    warmup_s: float | None = None
    startup: dict | None = None  # where the last start-up went (s): spawn, import, load, warm_up
    exitcode: int | None = None
    started_at: float = 0.0
    deaths: int = 0
    watched: list[int] = field(default_factory=list)  # fds registered with the loop
    spare: bool = False  # a warm standby: not in a slot, not dispatched to, promoted on a death
    death: str = ""  # why it died, where the backend says more than an exit code (a Ray actor's error)

    @property
    def alive(self) -> bool:
        return self.state in (WorkerState.STARTING, WorkerState.IDLE, WorkerState.BUSY)


def worker_spec(info: ModelInfo, cfg: ServeConfig, w: WorkerHandle, input_shm: str = "",
                output_shm: str = "", others: Sequence[ModelInfo] = ()) -> WorkerSpec:
    """What the worker of slot ``w`` loads and how it runs (both backends). ``others``: the
    models after the first of a server of several SuperNets (RunBatch.model 1, 2, ...)."""
    layout = BundleLayout(info.bundle)
    return WorkerSpec(
        index=w.index, weights_path=str(layout.weights), norm_path=str(layout.norm),
        subnet_ids=tuple(info.subnet_ids),
        input_shape=info.input_shape, num_classes=info.num_classes, max_batch=info.profile.max_batch,
        input_shm=input_shm, output_shm=output_shm,
        threads=cfg.threads_per_worker, warmup_runs=cfg.warmup_runs,
        warmup_nice=cfg.restart_warmup_nice if (w.deaths or w.spare) else 0,
        crash_value=cfg.inject_crash_value, device=worker_device(info.gpus, w.index),
        noop=cfg.noop, others=tuple(worker_spec(o, cfg, w, input_shm, output_shm) for o in others))


def slab_bytes(infos: Sequence[ModelInfo]) -> tuple[int, int]:
    """The input and output slab sizes of a worker serving ``infos``: max_batch rows of the
    largest row among the models (one model's batch at a time uses the slabs)."""
    return (max(i.profile.max_batch * i.input_bytes for i in infos),
            max(i.profile.max_batch * i.output_bytes for i in infos))


class WorkerCounts:
    """How many of an executor's slots live and serve (both backends count the same way)."""

    workers: list[WorkerHandle]

    @property
    def num_alive(self) -> int:
        return sum(1 for w in self.workers if w.alive)

    @property
    def num_ready(self) -> int:
        return sum(1 for w in self.workers if w.state in (WorkerState.IDLE, WorkerState.BUSY))


class WorkerPool(WorkerCounts):
    """The ``local`` executor (superserve/serving/executor.py): worker processes here."""

    backend = "local"

    def __init__(self, info: ModelInfo, config: ServeConfig, others: Sequence[ModelInfo] = ()) -> None:
        """Slots and their shared-memory slabs; no process yet (see :meth:`start`).
        ``others``: the further models of a server of several SuperNets; every worker holds
        all of them and RunBatch.model says which runs (0: ``info``)."""
        self.info = info
        self.others = tuple(others)
        self.infos = (info, *self.others)
        self._row_bytes = [i.input_bytes for i in self.infos]
        self.config = config
        self.listener: PoolListener | None = None
        self.max_batch = info.profile.max_batch
        self._ctx = mp.get_context("spawn")  # fork after torch/asyncio is unsafe
        self._loop: asyncio.AbstractEventLoop | None = None
        self.workers: list[WorkerHandle] = []
        # Warm standbys (``standby_workers``): a replacement for a dead worker that has already
        # paid for process spawn, the torch import, the weight load and the warm-up passes (6-8 s
        # on a 2-core machine), so a slot is refilled the moment its death is seen.
        self.spares: list[WorkerHandle] = []
        self._stopping = False
        for i in range(config.workers + config.standby_workers):
            h = self._handle(i, spare=i >= config.workers)
            (self.spares if h.spare else self.workers).append(h)

    def _handle(self, index: int, spare: bool = False) -> WorkerHandle:
        """A slot with its two fresh shared-memory slabs (no process yet)."""
        in_bytes, out_bytes = slab_bytes(self.infos)
        ins = SharedMemory(create=True, size=in_bytes)
        outs = SharedMemory(create=True, size=out_bytes)
        assert ins.buf is not None and outs.buf is not None  # freshly created segments
        return WorkerHandle(index, ins, outs, ins.buf, outs.buf, spare=spare)

    # --- lifecycle -----------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop, listener: PoolListener) -> None:
        """Spawn every worker; from now on their events go to ``listener`` on ``loop``."""
        self._loop, self.listener = loop, listener
        for w in self.workers + self.spares:
            self.spawn(w)

    def spawn(self, w: WorkerHandle) -> None:
        """(Re)start the process of slot ``w``; it reports ``worker_ready`` when warm."""
        assert self._loop is not None
        assert w.input_shm is not None and w.output_shm is not None
        spec = worker_spec(self.info, self.config, w, w.input_shm.name, w.output_shm.name, self.others)
        router_end, worker_end = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=worker_main, args=(spec.to_json(), worker_end),
                                 name=f"superserve-worker-{w.index}", daemon=True)
        t_spawn = time.monotonic()
        proc.start()
        worker_end.close()  # only the child holds it now: its exit gives us EOF
        w.process, w.conn, w.pid = proc, router_end, proc.pid
        w.state, w.exitcode, w.started_at = WorkerState.STARTING, None, t_spawn
        w.watched = [router_end.fileno(), proc.sentinel]
        self._loop.add_reader(router_end.fileno(), self._readable, w)
        self._loop.add_reader(proc.sentinel, self._died, w)

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Ask every worker to exit, wait up to ``timeout_s``, then kill what is left."""
        self._stopping = True
        await self._stop(self.workers + self.spares, timeout_s)

    async def _stop(self, handles: list[WorkerHandle], timeout_s: float) -> None:
        for w in handles:
            if w.state is WorkerState.STARTING and w.process is not None:
                # Still loading or warming (a restart): it holds no work and would read Stop
                # only after its warm-up, so it is killed rather than waited for.
                self._unwatch(w)
                w.state = WorkerState.STOPPED
                w.process.kill()
            elif w.alive and w.conn is not None:
                try:
                    w.conn.send_bytes(encode(Stop()))
                except OSError:
                    pass
                self._unwatch(w)
                w.state = WorkerState.STOPPED
        deadline = time.monotonic() + timeout_s
        for w in handles:
            p = w.process
            while p is not None and p.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if p is not None and p.is_alive():
                p.kill()
                p.join(1.0)
            if p is not None:
                w.exitcode = p.exitcode

    def close(self) -> None:
        """Release the slabs (after :meth:`stop`)."""
        for w in self.workers + self.spares:
            self._release(w)

    @staticmethod
    def _release(w: WorkerHandle) -> None:
        w.input_view.release()
        w.output_view.release()
        for shm in (w.input_shm, w.output_shm):
            if shm is None:
                continue
            shm.close()
            try:
                shm.unlink()
            except FileNotFoundError:
                pass

    # --- scaling (superserve/serving/scaling.py) ---------------------------------------
    def add_workers(self, n: int) -> list[WorkerHandle]:
        """``n`` new slots after the last one, spawned now; each reports ``worker_ready``
        through the listener when warm, as at start-up."""
        new = [self._handle(len(self.workers) + k) for k in range(n)]
        self.workers.extend(new)
        for w in new:
            self.spawn(w)
        return new

    def remove_workers(self, ws: list[WorkerHandle]) -> None:
        """Take slots out (the last ones: indices stay positions); the caller has retired
        them at the router and stops them with :meth:`stop_workers`."""
        gone = set(ws)
        self.workers = [w for w in self.workers if w not in gone]
        assert all(w.index == i for i, w in enumerate(self.workers)), "remove the last slots"

    async def stop_workers(self, ws: list[WorkerHandle], timeout_s: float = 5.0) -> None:
        """Stop removed slots' processes and release their slabs."""
        await self._stop(ws, timeout_s)
        for w in ws:
            self._release(w)

    def describe(self) -> str:
        return f"{len(self.workers)} local worker process(es)"

    # --- work ----------------------------------------------------------------------------
    def run(self, w: WorkerHandle, msg: RunBatch, rows: Sequence[bytes]) -> None:
        """Copy ``rows`` (float32 inputs, one per request) into the worker's slab, then tell it."""
        view, n = w.input_view, self._row_bytes[msg.model]
        off = 0
        for row in rows:
            view[off:off + n] = row
            off += n
        w.state = WorkerState.BUSY
        try:
            if w.conn is None:
                raise OSError("worker has no pipe")
            w.conn.send_bytes(encode(msg))
        except OSError:
            self._died(w)  # broken pipe: it is gone; the death path re-queues the batch

    def kill(self, w: WorkerHandle) -> None:
        """Kill a worker (a hung one; tests). Its death is reported as usual."""
        if w.process is not None and w.process.is_alive():
            w.process.kill()

    # --- events from the loop ------------------------------------------------------------
    def _readable(self, w: WorkerHandle) -> None:
        listener = self.listener
        if listener is None or w.conn is None:
            return
        try:
            msg = decode(w.conn.recv_bytes())
        except (EOFError, OSError):
            self._died(w)
            return
        if isinstance(msg, WorkerReady):
            w.startup = {"spawn_s": round(max(0.0, msg.entered_at - w.started_at), 3),
                         "import_s": round(msg.import_s, 3), "load_s": round(msg.load_s, 3),
                         "warm_up_s": round(msg.warmup_s - msg.load_s, 3),
                         "total_s": round(time.monotonic() - w.started_at, 3)}
        if w.spare:
            if isinstance(msg, WorkerReady):
                w.state, w.warmup_s = WorkerState.IDLE, msg.warmup_s
                listener.standby_ready(w)
            return
        if isinstance(msg, BatchDone):
            w.state = WorkerState.IDLE
            listener.batch_done(w, msg)
        elif isinstance(msg, WorkerReady):
            w.state, w.warmup_s = WorkerState.IDLE, msg.warmup_s
            listener.worker_ready(w)
        elif isinstance(msg, BatchFailed):
            w.state = WorkerState.IDLE
            listener.batch_failed(w, msg)

    def _unwatch(self, w: WorkerHandle) -> None:
        if self._loop is not None:
            for fd in w.watched:
                self._loop.remove_reader(fd)
        w.watched = []

    def _died(self, w: WorkerHandle) -> None:
        if not w.alive:
            return
        self._unwatch(w)
        w.state = WorkerState.DEAD
        w.deaths += 1
        if w.process is not None:
            w.process.join(0.5)  # the sentinel fired or the pipe broke: exit is imminent
            w.exitcode = w.process.exitcode
        try:
            if w.conn is not None:
                w.conn.close()
        except OSError:
            pass
        if w.spare:
            # A standby that died holds no work: start another after a pause (not in a loop).
            if not self._stopping and self._loop is not None and w.deaths < 5:
                self._loop.call_later(1.0, self._respawn_spare, w)
            return
        if self.listener is not None:
            self.listener.worker_died(w)

    def _respawn_spare(self, w: WorkerHandle) -> None:
        if not self._stopping and w.spare and w.state is WorkerState.DEAD:
            self.spawn(w)

    # --- standbys ------------------------------------------------------------------------
    def promote(self, dead: WorkerHandle) -> WorkerHandle | None:
        """Fill the slot of ``dead`` with a warm standby, if one is ready, and start a new
        standby on the dead worker's slabs (nicer, in the background). Returns the handle
        now in the slot (ready to run), or None."""
        spare = next((s for s in self.spares if s.state is WorkerState.IDLE), None)
        if spare is None or dead.alive or self._stopping or self._loop is None:
            return None
        self.spares.remove(spare)
        slot = dead.index
        spare.index, spare.spare = slot, False
        self.workers[slot] = spare
        dead.index = self.config.workers + len(self.spares)
        dead.spare, dead.deaths = True, 0
        self.spares.append(dead)
        # Later in this loop iteration: the router has yet to hear of the death (and take the
        # dead worker's in-flight batch off its books) before this handle lives again.
        self._loop.call_soon(self._respawn_spare, dead)
        return spare

