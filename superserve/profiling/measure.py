"""Measure the latency profile of served SubNets on the current device."""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from typing import Callable, Sequence

import torch

from ..scheduling.profile import LatencyProfile, SubnetProfile
from ..supernet import SubNetConfig, SuperResNet


def device_name(device: str = "cpu") -> str:
    """What a profile measured on ``device`` ran on: ``cuda:N: <GPU name>`` or ``cpu: <model>``."""
    if device.startswith("cuda"):
        return f"{device}: {torch.cuda.get_device_name(torch.device(device))}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"cpu: {cpu} ({os.cpu_count()} cores)"


def input_shape(spec) -> tuple[int, ...]:
    """The shape of one input of a SuperNet: (C, H, W) of an image, (L,) token ids for BERT."""
    if getattr(spec, "family", None) == "bert":
        return (spec.seq_len,)
    return (spec.in_channels, spec.input_size, spec.input_size)


def example_batch(spec, batch: int, shape: tuple[int, ...], device: str = "cpu") -> torch.Tensor:
    """A random batch to time: normal pixels, or uniform token ids (no padding) for BERT."""
    if getattr(spec, "family", None) == "bert":
        return torch.randint(1, spec.vocab_size, (batch, *shape), device=device)
    return torch.randn(batch, *shape, device=device)


def percentile(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


@torch.inference_mode()
def time_batches(model: SuperResNet, config: SubNetConfig | str, batch: int, repeats: int, warmup: int,
                 input_shape: tuple[int, ...], device: str = "cpu") -> list[float]:
    """Latency in ms of `repeats` forward passes of one SubNet on one batch (after warm-up)."""
    model.actuate(config)
    x = example_batch(model.spec, batch, input_shape, device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    out = []
    for i in range(warmup + repeats):
        sync()
        t0 = time.perf_counter()
        model(x)
        sync()
        if i >= warmup:
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def measure_profile(
    model: SuperResNet,
    configs: Sequence[SubNetConfig],
    accuracies: dict[str, dict[str, float]],
    max_batch: int = 16,
    repeats: int = 15,
    warmup: int = 3,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> LatencyProfile:
    """Latency p50/p99 per SubNet and batch size 1..max_batch, measured with the threads
    torch is set to use (set them to what one serving worker gets). Any SuperNet family
    (superserve's own or an imported OFA one): it needs actuate, subnet_cost and spec.

    Interleaved: after a warm-up of every (SubNet, batch) cell, each of the `repeats` rounds
    times every cell once, SubNet switching between runs as it does in serving. A transient
    disturbance (another process, a frequency change) then spreads over all cells of one
    round instead of biasing the whole sample of one cell, so the medians stay ordered."""
    spec = model.spec
    shape = input_shape(spec)
    model.eval().to(device)
    cells = [(config, b) for config in configs for b in range(1, max_batch + 1)]
    inputs = {b: example_batch(spec, b, shape, device) for b in range(1, max_batch + 1)}
    samples: dict[tuple[str, int], list[float]] = {(c.id, b): [] for c, b in cells}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    steps, done = warmup + repeats, 0
    with torch.inference_mode():
        for r in range(warmup + repeats):
            for config, b in cells:
                model.actuate(config)
                sync()
                t0 = time.perf_counter()
                model(inputs[b])
                sync()
                if r >= warmup:
                    samples[(config.id, b)].append((time.perf_counter() - t0) * 1e3)
            done += 1
            if progress is not None:
                progress(done, steps)
    subnets = []
    for config in configs:
        macs, params = model.subnet_cost(config)
        acc = accuracies.get(config.id, {})
        p50 = tuple(statistics.median(samples[(config.id, b)]) for b in range(1, max_batch + 1))
        p99 = tuple(max(percentile(samples[(config.id, b)], 99), p50[b - 1]) for b in range(1, max_batch + 1))
        subnets.append(SubnetProfile(
            id=config.id, accuracy=acc.get("test", acc.get("val", 0.0)), latency_p50_ms=p50,
            latency_p99_ms=p99, config=config.to_dict(), flops=2 * macs, params=params,
            val_accuracy=acc.get("val"), test_accuracy=acc.get("test"),
        ))
    meta = {
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "method": (f"torch.inference_mode forward of a random batch, {warmup} warm-up + {repeats} timed "
                   f"rounds, each round timing every (SubNet, batch) cell once (interleaved), "
                   f"perf_counter wall time, p50 = median, p99 = 99th pct"),
        "input_shape": list(shape), "host": platform.node(),
    }
    meta["torch_device"] = device
    return LatencyProfile(tuple(subnets), device=device_name(device), meta=meta)


def check_properties(profile: LatencyProfile) -> dict[str, float]:
    """The paper's profile properties, as fractions of the pairs that satisfy them.
    P1: latency grows with batch size; P2: latency grows with accuracy (at equal batch);
    P3: the smallest SubNet at the largest batch is about as fast as the largest at batch 1."""
    subs = profile.subnets
    b = profile.max_batch
    p1 = [s.latency_p50_ms[i + 1] >= s.latency_p50_ms[i] for s in subs for i in range(b - 1)]
    p2 = [subs[j].latency_p50_ms[k] >= subs[i].latency_p50_ms[k]
          for k in range(b) for i in range(len(subs)) for j in range(i + 1, len(subs))
          if subs[j].accuracy > subs[i].accuracy]
    smallest, largest = profile.smallest, profile.largest
    return {
        "p1_batch_monotone_fraction": sum(p1) / len(p1),
        "p2_accuracy_monotone_fraction": sum(p2) / max(1, len(p2)),
        "p3_smallest_at_max_batch_over_largest_at_1": smallest.latency_p50_ms[-1] / largest.latency_p50_ms[0],
        "smallest_over_largest_at_max_batch": smallest.latency_p50_ms[-1] / largest.latency_p50_ms[-1],
    }
