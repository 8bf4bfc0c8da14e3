"""Where tensors live: the ``--device`` option of serve, profile and train.

``cpu`` (the default) or ``cuda[:N]``: ``cuda`` means every visible GPU (worker i of a
server on GPU i mod count), ``cuda:N`` pins everything to GPU N. Parsing is pure Python, so
the router (which never imports torch) can check a setting; whether CUDA is there is asked
of torch itself, in this process if torch is already imported, else in a short child
process. The torch-side helpers (placement, the worker's pinned staging buffers and stream)
import torch when called. This module imports no other part of superserve.
"""
from __future__ import annotations

import functools
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

CPU = "cpu"
_PATTERN = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


class DeviceError(ValueError):
    """A device setting that is malformed or not available here (its message names it)."""


@dataclass(frozen=True)
class Device:
    kind: str  # "cpu" | "cuda"
    index: int | None = None  # cuda:N; None: cpu, or every visible GPU ("cuda")

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


def parse_device(text: Any) -> Device:
    """``cpu``, ``cuda`` or ``cuda:N``; anything else is a DeviceError naming the value."""
    if not isinstance(text, str):
        raise DeviceError(f"device must be a string like 'cpu', 'cuda' or 'cuda:0', not {text!r}")
    m = _PATTERN.match(text.strip().lower())
    if m is None:
        raise DeviceError(f"unknown device {text!r}: expected cpu, cuda or cuda:N")
    kind, index = m.group(1), m.group(2)
    if kind == CPU and index is not None:
        raise DeviceError(f"unknown device {text!r}: cpu takes no index")
    return Device(kind, None if index is None else int(index))


@functools.lru_cache(maxsize=1)
def cuda_device_count() -> int:
    """Visible CUDA devices (0 when torch has no CUDA or there is no GPU). Asked in a child
    process unless torch is already imported here, so a torch-free process stays torch-free."""
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    code = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else 0
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return 0


def check_device(text: Any, count: int | None = None) -> Device:
    """Parse and check that the device is usable here (``count``: visible GPUs; default:
    ask torch). Raises DeviceError naming the device otherwise."""
    dev = parse_device(text)
    if not dev.is_cuda:
        return dev
    n = cuda_device_count() if count is None else count
    if n == 0:
        raise DeviceError(f"device {str(dev)!r}: CUDA is not available here (torch.cuda.is_available() "
                          f"is False); use --device cpu")
    if dev.index is not None and dev.index >= n:
        raise DeviceError(f"device {str(dev)!r}: only {n} CUDA device(s) visible (cuda:0..cuda:{n - 1})")
    return dev


def gpu_ids(dev: Device, count: int) -> tuple[int, ...]:
    """The GPUs a server on ``dev`` uses: () on cpu, (N,) for cuda:N, all of them for cuda."""
    if not dev.is_cuda:
        return ()
    return (dev.index,) if dev.index is not None else tuple(range(count))


def default_workers(dev: Device, count: int) -> int:
    """Worker processes when none are asked for: one on cpu, one per GPU used on cuda."""
    return max(1, len(gpu_ids(dev, count)))


def worker_device(gpus: tuple[int, ...], worker_index: int) -> str:
    """The torch device string of worker ``worker_index``: round-robin over ``gpus``; cpu
    when there are none."""
    return f"cuda:{gpus[worker_index % len(gpus)]}" if gpus else CPU


def place(module: Any, device: str) -> Any:
    """Move a model (its parameters and buffers: the SubnetNorm table is buffers) to
    ``device``; a no-op on cpu. Returns the module."""
    return module if device == CPU else module.to(device)


class Staging:
    """A worker's path between its host slabs and its device: on cuda a pinned host input
    buffer, copied to the device with ``non_blocking=True`` on the worker's own stream, and a
    pinned host output buffer the logits come back to; ``run`` synchronises the stream before
    it returns, so the host output is complete. On cpu it runs the model on the slab views."""

    def __init__(self, device: str, max_batch: int, input_shape: tuple[int, ...], num_classes: int) -> None:
        import torch

        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            torch.cuda.set_device(self.device)
            self.stream = torch.cuda.Stream(device=self.device)
            self.host_in = torch.empty((max_batch, *input_shape), dtype=torch.float32).pin_memory()
            self.host_out = torch.empty((max_batch, num_classes), dtype=torch.float32).pin_memory()
            self.dev_in = torch.empty((max_batch, *input_shape), dtype=torch.float32, device=self.device)

    def run(self, model: Any, inputs: Any, outputs: Any, batch: int) -> None:
        """outputs[:batch] = model(inputs[:batch]) (host tensors in and out)."""
        import torch

        if not self.cuda:
            outputs[:batch].copy_(model(inputs[:batch]))
            return
        self.host_in[:batch].copy_(inputs[:batch])
        with torch.cuda.stream(self.stream):
            x = self.dev_in[:batch]
            x.copy_(self.host_in[:batch], non_blocking=True)
            self.host_out[:batch].copy_(model(x), non_blocking=True)
        self.stream.synchronize()
        outputs[:batch].copy_(self.host_out[:batch])
