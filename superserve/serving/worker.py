"""A worker process: holds the whole SuperNet (with SubnetNorm), runs batches on request.

The worker owns every tensor. Its input and output are views of two shared-memory slabs
the router created (max_batch rows each): the router writes request rows into the input
slab and reads logits from the output slab, so a batch crosses the process boundary as
a 9-byte message. Loading goes through safetensors only (no pickle).
"""
from __future__ import annotations

import json
import os
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
    input_shm: str
    output_shm: str
    threads: int = 1
    warmup_runs: int = 2
    # A restarted worker loads and warms while the others serve: on a small machine its
    # start-up (import, load, warm-up passes) would take CPU from them. It runs this much
    # nicer until it is warm, then goes back where the OS allows it.
    warmup_nice: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "WorkerSpec":
        d = json.loads(text)
        d["subnet_ids"] = tuple(d["subnet_ids"])
        d["input_shape"] = tuple(d["input_shape"])
        return cls(**d)


def attach_shm(name: str) -> SharedMemory:
    """Attach to one of the router's slabs. Spawned workers share the router's resource
    tracker, where the segment is already registered (a set: attaching again is a no-op),
    so the router's unlink at shutdown is the one clean-up; the worker only closes."""
    return SharedMemory(name=name)


def worker_main(spec_json: str, conn: Connection) -> None:
    """Process entry point (multiprocessing, spawn)."""
    from superserve.serving.messages import (BatchDone, BatchFailed, RunBatch, Stop, WorkerReady,
                                             decode, encode)

    entered_at = time.monotonic()
    # Ctrl-C goes to the whole process group; the router decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    spec = WorkerSpec.from_json(spec_json)
    base_priority = os.getpriority(os.PRIO_PROCESS, 0)
    if spec.warmup_nice > 0:
        os.nice(spec.warmup_nice)
    os.environ.setdefault("OMP_NUM_THREADS", str(spec.threads))
    t_import = time.perf_counter()
    import torch

    from superserve.supernet import load_supernet

    torch.set_num_threads(spec.threads)
    t_start = time.perf_counter()
    import_s = t_start - t_import
    model = load_supernet(spec.weights_path, spec.norm_path)
    load_s = time.perf_counter() - t_start
    in_shm, out_shm = attach_shm(spec.input_shm), attach_shm(spec.output_shm)
    c, h, w = spec.input_shape
    inputs = torch.frombuffer(in_shm.buf, dtype=torch.float32, count=spec.max_batch * c * h * w)
    inputs = inputs.view(spec.max_batch, c, h, w)
    outputs = torch.frombuffer(out_shm.buf, dtype=torch.float32, count=spec.max_batch * spec.num_classes)
    outputs = outputs.view(spec.max_batch, spec.num_classes)
    ids = spec.subnet_ids
    try:
        with torch.inference_mode():
            # Warm every served SubNet at every batch size: the first passes of a shape pay for
            # allocator growth and kernel selection, which would otherwise land on requests.
            for sid in ids:
                model.actuate(sid)
                for b in range(1, spec.max_batch + 1):
                    for _ in range(spec.warmup_runs):
                        model(inputs[:b])
            if spec.warmup_nice > 0:
                try:
                    os.setpriority(os.PRIO_PROCESS, 0, base_priority)
                except PermissionError:
                    pass  # unprivileged: stays nicer than its siblings (serves, a little slower under contention)
            conn.send_bytes(encode(WorkerReady(os.getpid(), time.perf_counter() - t_start, import_s, load_s,
                                               entered_at)))
            while True:
                try:
                    msg = decode(conn.recv_bytes())
                except (EOFError, OSError):
                    break  # the router is gone: nobody to answer
                if isinstance(msg, Stop):
                    break
                if not isinstance(msg, RunBatch):
                    continue
                t0 = time.perf_counter()
                try:
                    model.actuate(ids[msg.subnet_index])
                    outputs[:msg.batch_size].copy_(model(inputs[:msg.batch_size]))
                except Exception as exc:  # report, keep serving: one bad batch is not a dead worker
                    conn.send_bytes(encode(BatchFailed(msg.seq, f"{type(exc).__name__}: {exc}")))
                    continue
                conn.send_bytes(encode(BatchDone(msg.seq, (time.perf_counter() - t0) * 1000.0)))
    finally:
        # Views must go before the segments can close.
        del inputs, outputs
        in_shm.close()
        out_shm.close()
