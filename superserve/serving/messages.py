"""Messages between the router and its workers.

Tensors never travel in messages: inputs and logits live in per-worker shared-memory slabs.
Messages are a few bytes each, packed with ``struct`` (never pickle), sent over a
``multiprocessing`` pipe with ``send_bytes``; the first byte says which message it is.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

_RUN, _STOP, _READY, _DONE, _FAILED = b"R", b"S", b"W", b"D", b"F"
_RUN_MODEL = b"M"  # RunBatch for a model other than the first (several SuperNets in one server)
_RUN_FMT = struct.Struct("<IHH")  # seq, subnet index, batch size
_RUN_MODEL_FMT = struct.Struct("<IHHH")  # seq, subnet index, batch size, model index
_READY_FMT = struct.Struct("<Ifffd")  # pid, warm-up s, torch import s, weight load s, main() entry (monotonic)
_DONE_FMT = struct.Struct("<If")  # seq, compute ms


@dataclass(frozen=True, slots=True)
class RunBatch:
    """Router -> worker: run SubNet ``subnet_index`` of served model ``model`` on the first
    ``batch_size`` input rows. ``model`` indexes the worker's SuperNets (0: the first, and
    the only one of a one-bundle server, whose message keeps its 9 bytes)."""

    seq: int
    subnet_index: int
    batch_size: int
    model: int = 0


@dataclass(frozen=True, slots=True)
class Stop:
    """Router -> worker: exit after the current batch."""


@dataclass(frozen=True, slots=True)
class WorkerReady:
    """Worker -> router: model loaded, every served SubNet warmed. Where its start-up went:
    ``entered_at`` (CLOCK_MONOTONIC, machine-wide) minus the spawn time is the process start;
    then ``import_s`` (torch), ``load_s`` (weights and SubnetNorm tables) and the warm-up
    passes (``warmup_s`` counts load and warm-up)."""

    pid: int
    warmup_s: float
    import_s: float = 0.0
    load_s: float = 0.0
    entered_at: float = 0.0


@dataclass(frozen=True, slots=True)
class BatchDone:
    """Worker -> router: logits of batch ``seq`` are in the output slab."""

    seq: int
    compute_ms: float


@dataclass(frozen=True, slots=True)
class BatchFailed:
    """Worker -> router: batch ``seq`` raised; the worker keeps running."""

    seq: int
    message: str


WorkerMessage = WorkerReady | BatchDone | BatchFailed
RouterMessage = RunBatch | Stop


def encode(msg: RouterMessage | WorkerMessage) -> bytes:
    if isinstance(msg, RunBatch):
        if msg.model:
            return _RUN_MODEL + _RUN_MODEL_FMT.pack(msg.seq, msg.subnet_index, msg.batch_size, msg.model)
        return _RUN + _RUN_FMT.pack(msg.seq, msg.subnet_index, msg.batch_size)
    if isinstance(msg, BatchDone):
        return _DONE + _DONE_FMT.pack(msg.seq, msg.compute_ms)
    if isinstance(msg, Stop):
        return _STOP
    if isinstance(msg, WorkerReady):
        return _READY + _READY_FMT.pack(msg.pid, msg.warmup_s, msg.import_s, msg.load_s, msg.entered_at)
    if isinstance(msg, BatchFailed):
        return _FAILED + struct.pack("<I", msg.seq) + msg.message.encode("utf-8", "replace")[:2000]
    raise TypeError(f"not a serving message: {msg!r}")


def decode(data: bytes) -> RouterMessage | WorkerMessage:
    kind, body = data[:1], data[1:]
    if kind == _DONE:
        return BatchDone(*_DONE_FMT.unpack(body))
    if kind == _RUN:
        return RunBatch(*_RUN_FMT.unpack(body))
    if kind == _RUN_MODEL:
        return RunBatch(*_RUN_MODEL_FMT.unpack(body))
    if kind == _STOP:
        return Stop()
    if kind == _READY:
        return WorkerReady(*_READY_FMT.unpack(body))
    if kind == _FAILED:
        return BatchFailed(struct.unpack("<I", body[:4])[0], body[4:].decode("utf-8", "replace"))
    raise ValueError(f"unknown serving message kind {kind!r}")
