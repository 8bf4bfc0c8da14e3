"""A worker as a Ray actor: the whole SuperNet and its SubnetNorm table, one batch at a time.

The model side is the local worker's own :class:`~superserve.serving.worker.SupernetRunner`
(load, warm-up, run); only the transport differs. The actor gets the bundle's two
safetensors files as byte arrays in Ray's object store (so a node needs neither the bundle
nor a shared file system), writes them to a private temporary directory and loads them with
safetensors, as a local worker does: no pickle on the model's path. Batches come as numpy
arrays (rows x C x H x W, float32) and the logits go back as one (rows x classes) array.

``watch`` never returns: the router keeps one call of it outstanding per actor, in its own
concurrency group, so the actor's death (its process killed, its node gone) fails that call
at once, idle or not, the way a local worker's death makes its process sentinel readable.

Imports ray at module level: import this only where Ray is installed (ray_pool.py does so
when the Ray backend starts).
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import replace
from typing import Any

import numpy as np
import ray


@ray.remote(concurrency_groups={"watch": 1})
class SupernetActor:
    def __init__(self, spec_json: str, weights: np.ndarray, norm: np.ndarray) -> None:
        from superserve.serving.worker import SupernetRunner, WarmupPriority, WorkerSpec

        self.entered_at = time.monotonic()
        spec = WorkerSpec.from_json(spec_json)
        # A restarted actor warms up nicer, as a restarted local worker does (its node's cores
        # may be serving), then returns to its siblings' priority.
        priority = WarmupPriority(spec.warmup_nice)
        priority.enter()
        tmp = tempfile.mkdtemp(prefix="superserve-actor-")
        try:
            wpath, npath = os.path.join(tmp, "weights.safetensors"), os.path.join(tmp, "subnetnorm.safetensors")
            with open(wpath, "wb") as f:
                f.write(memoryview(weights))
            with open(npath, "wb") as f:
                f.write(memoryview(norm))
            spec = replace(spec, weights_path=wpath, norm_path=npath)
            self.runner = SupernetRunner(spec)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # loaded: the tensors are in memory
        self.warmup_s = self.runner.warm_up()
        priority.leave()
        self.shape = (spec.max_batch, *spec.input_shape)
        self._never = threading.Event()

    def ready(self) -> dict[str, Any]:
        """Where and how this actor started (the constructor has loaded and warmed it)."""
        r = self.runner
        return {"pid": os.getpid(), "host": socket.gethostname(),
                "node_id": ray.get_runtime_context().get_node_id(), "warmup_s": self.warmup_s,
                "import_s": r.import_s, "load_s": r.load_s, "entered_at": self.entered_at}

    def run(self, subnet_index: int, batch: np.ndarray) -> tuple[np.ndarray, float]:
        """Logits of SubNet ``subnet_index`` on ``batch``, and the compute time in ms."""
        import torch

        r = self.runner
        n = int(batch.shape[0])
        if not 1 <= n <= self.shape[0] or tuple(batch.shape[1:]) != self.shape[1:]:
            raise ValueError(f"batch of shape {batch.shape}; this worker runs up to {self.shape}")
        r.inputs[:n].copy_(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
        compute_ms = r.run(subnet_index, n)
        return r.outputs[:n].numpy().copy(), compute_ms

    def noop(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        """The transport alone: a batch in, zero logits of its size out (overhead benchmark)."""
        return np.zeros((int(batch.shape[0]), int(self.runner.outputs.shape[1])), np.float32), 0.0

    @ray.method(concurrency_group="watch")
    def watch(self) -> None:
        """Never returns while the actor lives (see the module docstring)."""
        self._never.wait()
