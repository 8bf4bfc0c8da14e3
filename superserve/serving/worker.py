"""A worker process: holds the whole SuperNet (with SubnetNorm), runs batches on request.

The worker owns every tensor. Its input and output are views of two shared-memory slabs
the router created (max_batch rows each): the router writes request rows into the input
slab and reads logits from the output slab, so a batch crosses the process boundary as
a 9-byte message. Loading goes through safetensors only (no pickle).
"""
from __future__ import annotations

import json
import os
import resource
import signal
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory


@dataclass(frozen=True)
class WorkerSpec:
    index: int
    weights_path: str
    norm_path: str
    subnet_ids: tuple[str, ...]  # the profile's order: RunBatch.subnet_index indexes this
    input_shape: tuple[int, int, int]
    num_classes: int
    max_batch: int
    input_shm: str = ""  # the router's slabs (local processes); "" for a Ray actor
    output_shm: str = ""
    threads: int = 1
    warmup_runs: int = 2
    # A restarted worker loads and warms while the others serve: on a small machine its
    # start-up (import, load, warm-up passes) would take CPU from them. It runs this much
    # nicer until it is warm, then returns to its siblings' priority (see WarmupPriority).
    warmup_nice: int = 0
    crash_value: float | None = None  # testing only: ServeConfig.inject_crash_value
    device: str = "cpu"  # "cpu" or "cuda:N" (superserve.device.worker_device)
    noop: bool = False  # benchmark mode: zero logits, no forward pass (ServeConfig.noop)
    # Several SuperNets in one server: the specs of the models after the first (RunBatch.model
    # 1, 2, ...), each loaded by this worker too and reading the same slabs (sized for the
    # largest row). Empty for a one-bundle server.
    others: tuple["WorkerSpec", ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> "WorkerSpec":
        d = dict(d)
        d["subnet_ids"] = tuple(d["subnet_ids"])
        d["input_shape"] = tuple(d["input_shape"])
        d["others"] = tuple(cls.from_dict(o) for o in d.get("others", ()))
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "WorkerSpec":
        return cls.from_dict(json.loads(text))

    @property
    def models(self) -> tuple["WorkerSpec", ...]:
        """Every model this worker serves, in RunBatch.model order."""
        return (self, *self.others)


_CAP_SYS_NICE = 23  # linux/capability.h


def can_restore_priority(base: int) -> bool:
    """Whether this process may lower its nice value back to ``base`` after raising it:
    with CAP_SYS_NICE (root outside a container that drops it), or when RLIMIT_NICE allows
    nice values down to ``base`` (Linux: the lowest is 20 - the soft limit)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    if int(line.split()[1], 16) >> _CAP_SYS_NICE & 1:
                        return True
                    break
    except (OSError, ValueError):
        pass
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    except (AttributeError, ValueError, OSError):
        return False
    return soft == resource.RLIM_INFINITY or 20 - soft <= base


def _set_priority(value: int) -> None:
    """Set the nice value of every thread of this process (Linux applies it per thread, and
    threads started while nicer, such as torch's, keep the value they were born with)."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, value)
        except ProcessLookupError:
            pass  # that thread has exited


class WarmupPriority:
    """Warm up ``nice`` steps nicer than now, then return to the priority the worker started
    with, the one its siblings serve at. Where the return is not allowed (unprivileged,
    RLIMIT_NICE 0) the warm-up runs at the normal priority instead: warming a little slower
    beats serving nicer than the siblings for the rest of the worker's life."""

    def __init__(self, nice: int) -> None:
        self.base = os.getpriority(os.PRIO_PROCESS, 0)
        self.nice = nice if nice > 0 and can_restore_priority(self.base) else 0

    def enter(self) -> None:
        if self.nice:
            _set_priority(min(19, self.base + self.nice))

    def leave(self) -> None:
        if self.nice:
            _set_priority(self.base)


def _crash() -> None:
    """Die as a native crash would (SIGSEGV, no core file): ServeConfig.inject_crash_value."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGSEGV, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGSEGV)


def attach_shm(name: str) -> SharedMemory:
    """Attach to one of the router's slabs. Spawned workers share the router's resource
    tracker, where the segment is already registered (a set: attaching again is a no-op),
    so the router's unlink at shutdown is the one clean-up; the worker only closes."""
    return SharedMemory(name=name)


class SupernetRunner:
    """The model side of a worker, whatever carries its batches: the whole SuperNet with its
    SubnetNorm table (safetensors, no pickle), warm-up of every served SubNet at every batch
    size, and one batch at a time. Inputs and logits are host tensors of ``max_batch`` rows:
    views of the router's shared-memory slabs for a local worker process (``in_buf`` /
    ``out_buf``), or the runner's own for a Ray actor (superserve/serving/ray_pool.py)."""

    def __init__(self, spec: WorkerSpec, in_buf: object = None, out_buf: object = None) -> None:
        os.environ.setdefault("OMP_NUM_THREADS", str(spec.threads))
        t_import = time.perf_counter()
        import torch

        from superserve.device import Staging, place
        from superserve.supernet import load_supernet

        torch.set_num_threads(spec.threads)
        self.t_start = time.perf_counter()
        self.import_s = self.t_start - t_import
        self.spec = spec
        # On cuda the SuperNet and its SubnetNorm table (buffers) live on the worker's GPU.
        self.model = place(load_supernet(spec.weights_path, spec.norm_path), spec.device)
        self.load_s = time.perf_counter() - self.t_start
        c, h, w = spec.input_shape
        n_in, n_out = spec.max_batch * c * h * w, spec.max_batch * spec.num_classes
        inputs = (torch.zeros(n_in, dtype=torch.float32) if in_buf is None
                  else torch.frombuffer(in_buf, dtype=torch.float32, count=n_in))
        outputs = (torch.zeros(n_out, dtype=torch.float32) if out_buf is None
                   else torch.frombuffer(out_buf, dtype=torch.float32, count=n_out))
        self.inputs = inputs.view(spec.max_batch, c, h, w)
        self.outputs = outputs.view(spec.max_batch, spec.num_classes)
        self.staging = Staging(spec.device, spec.max_batch, (c, h, w), spec.num_classes)
        self.ids = spec.subnet_ids
        self.crash = None if spec.crash_value is None else torch.tensor(spec.crash_value, dtype=torch.float32)
        self._inference = torch.inference_mode

    def warm_up(self) -> float:
        """Run every served SubNet at every batch size ``warmup_runs`` times: the first passes
        of a shape pay for allocator growth and kernel selection, which would otherwise land
        on requests. Returns seconds since the load began (load + warm-up)."""
        spec, model, staging = self.spec, self.model, self.staging
        if spec.noop:
            return time.perf_counter() - self.t_start
        with self._inference():
            for sid in self.ids:
                model.actuate(sid)
                for b in range(1, spec.max_batch + 1):
                    for _ in range(spec.warmup_runs):
                        if staging.cuda:
                            staging.run(model, self.inputs, self.outputs, b)
                        else:
                            model(self.inputs[:b])
        return time.perf_counter() - self.t_start

    def run(self, subnet_index: int, batch_size: int) -> float:
        """outputs[:batch_size] = SubNet ``subnet_index`` of inputs[:batch_size]; the compute
        time in ms. Raises what the model raises (the caller reports a failed batch)."""
        t0 = time.perf_counter()
        if self.crash is not None and bool((self.inputs[:batch_size].reshape(batch_size, -1)[:, 0]
                                            == self.crash).any()):
            _crash()  # the injected poison input (testing only)
        if self.spec.noop:  # benchmark mode: the serving path without the model
            self.outputs[:batch_size].zero_()
            return (time.perf_counter() - t0) * 1000.0
        with self._inference():
            self.model.actuate(self.ids[subnet_index])
            self.staging.run(self.model, self.inputs, self.outputs, batch_size)
        return (time.perf_counter() - t0) * 1000.0


def worker_main(spec_json: str, conn: Connection) -> None:
    """Process entry point (multiprocessing, spawn)."""
    from superserve.serving.messages import (BatchDone, BatchFailed, RunBatch, Stop, WorkerReady,
                                             decode, encode)

    entered_at = time.monotonic()
    # Ctrl-C goes to the whole process group; the router decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    spec = WorkerSpec.from_json(spec_json)
    priority = WarmupPriority(spec.warmup_nice)
    priority.enter()
    in_shm, out_shm = attach_shm(spec.input_shm), attach_shm(spec.output_shm)
    runner: SupernetRunner | None = None
    runners: list[SupernetRunner] = []
    try:
        runner = SupernetRunner(spec, in_shm.buf, out_shm.buf)
        runners.append(runner)
        # Several SuperNets in one server: every model's runner on the same slabs.
        runners.extend(SupernetRunner(o, in_shm.buf, out_shm.buf) for o in spec.others)
        for r in runners[1:]:
            r.warm_up()
        warmup_s = runner.warm_up()  # seconds since the first load began: every model's load and warm-up
        priority.leave()
        conn.send_bytes(encode(WorkerReady(os.getpid(), warmup_s, runner.import_s,
                                           sum(r.load_s for r in runners), entered_at)))
        while True:
            try:
                msg = decode(conn.recv_bytes())
            except (EOFError, OSError):
                break  # the router is gone: nobody to answer
            if isinstance(msg, Stop):
                break
            if not isinstance(msg, RunBatch):
                continue
            try:
                compute_ms = runners[msg.model].run(msg.subnet_index, msg.batch_size)
            except Exception as exc:  # report, keep serving: one bad batch is not a dead worker
                conn.send_bytes(encode(BatchFailed(msg.seq, f"{type(exc).__name__}: {exc}")))
                continue
            conn.send_bytes(encode(BatchDone(msg.seq, compute_ms)))
    finally:
        # Views must go before the segments can close.
        for r in runners:
            del r.inputs, r.outputs
        del runner, runners
        in_shm.close()
        out_shm.close()
