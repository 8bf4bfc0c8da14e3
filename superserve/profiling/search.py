"""Pareto search over the SubNet space: accuracy (validation split) against cost, measured
two ways: MACs and latency on this device (p50 at the largest batch, with the threads one
serving worker gets). A SubNet is kept when no other is at least as accurate, as cheap in MACs
and as fast, and strictly better in one of them.

The space of the embedded SuperNet holds ~6.9 million SubNets, too many to evaluate, so the search
is evolutionary as in OFA: random SubNets seed the population, then each generation mutates the
current Pareto front (one depth, expand ratio or width changed) and keeps what is new. Every
candidate is calibrated (SubnetNorm) before it is measured, so its accuracy is the one it will
be served with.
"""
from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from ..datasets import Split
from ..supernet import SubNetConfig, SuperNetSpec, SuperResNet, calibrate
from .accuracy import accuracy


@dataclass(frozen=True)
class Candidate:
    config: SubNetConfig
    val_accuracy: float
    macs: int
    params: int
    latency_ms: float = 0.0  # p50 at the largest batch; 0 when not measured (MACs alone decide)


def dominates(a: Candidate, b: Candidate) -> bool:
    return (a.val_accuracy >= b.val_accuracy and a.macs <= b.macs and a.latency_ms <= b.latency_ms
            and (a.val_accuracy > b.val_accuracy or a.macs < b.macs or a.latency_ms < b.latency_ms))


def pareto_front(cands: Iterable[Candidate]) -> list[Candidate]:
    """Candidates no other candidate dominates (accuracy up; MACs and latency down), by
    ascending MACs."""
    pool = list(cands)
    front = [c for c in pool if not any(dominates(o, c) for o in pool)]
    return sorted(front, key=lambda c: (c.macs, -c.val_accuracy))


def measured_candidate(model: SuperResNet, config: SubNetConfig, val_accuracy: float, batch: int = 16,
                       threads: int = 1) -> Candidate:
    """A candidate with its analytic cost and its latency measured now (``config`` must have
    a row of SubnetNorm statistics)."""
    macs, params = model.subnet_cost(config)
    return Candidate(config, val_accuracy, macs, params, candidate_latency_ms(model, config, batch, threads=threads))


def candidate_latency_ms(model: SuperResNet, config: SubNetConfig, batch: int = 16, repeats: int = 7,
                         threads: int = 1) -> float:
    """p50 latency of one SubNet at one batch size with ``threads`` intra-op threads."""
    from .measure import input_shape, time_batches

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return statistics.median(time_batches(model, config, batch, repeats, 2, input_shape(model.spec)))
    finally:
        torch.set_num_threads(before)


def mutate(spec: SuperNetSpec, config: SubNetConfig, rng: random.Random) -> SubNetConfig:
    if hasattr(spec, "mutate"):  # a family with its own control tuple (transformers)
        return spec.mutate(config, rng)
    depths = list(config.depths)
    expands = [list(e) for e in config.expands]
    width = config.width
    # Only dimensions with a choice to make (a small custom space may fix one).
    what_choices = [k for k, n in (("depth", len(spec.depth_choices)), ("expand", len(spec.expand_choices)),
                                   ("width", len(spec.width_choices))) if n > 1]
    if not what_choices:
        return config
    what = rng.choice(what_choices)
    m = rng.randrange(spec.num_stages)
    if what == "depth":
        depths[m] = rng.choice([d for d in spec.depth_choices if d != depths[m]])
        expands[m] = (expands[m] + [rng.choice(spec.expand_choices) for _ in range(depths[m])])[:depths[m]]
    elif what == "expand":
        i = rng.randrange(depths[m])
        expands[m][i] = rng.choice([e for e in spec.expand_choices if e != expands[m][i]])
    else:
        width = rng.choice([w for w in spec.width_choices if w != width])
    return SubNetConfig(tuple(depths), tuple(tuple(e) for e in expands), width)


def evolutionary_search(
    model: SuperResNet,
    calib: Callable[[], Iterable[torch.Tensor]],
    val: Split,
    initial: int = 150,
    generations: int = 6,
    per_generation: int = 50,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    latency_batch: int = 16,
    latency_threads: int = 1,
) -> list[Candidate]:
    """Evaluate initial random SubNets (plus the extremes), then mutate the front. Returns
    every evaluated candidate."""
    spec = model.spec
    rng = random.Random(seed)
    seen: dict[str, Candidate] = {}
    total = initial + 2 + generations * per_generation

    def evaluate(config: SubNetConfig) -> None:
        if config.id in seen:
            return
        calibrate(model, [config], calib)
        seen[config.id] = measured_candidate(model, config, accuracy(model, config, val), latency_batch,
                                             latency_threads)
        if progress is not None:
            progress(len(seen), total)

    for config in [spec.smallest(), spec.largest()]:
        evaluate(config)
    target = min(initial + 2, spec.space_size())  # a small custom space may hold fewer SubNets
    tries = 0
    while len(seen) < target and tries < 50 * (initial + 2):
        tries += 1
        evaluate(spec.sample(rng))
    for _ in range(generations):
        front = pareto_front(seen.values())
        budget, tries = len(seen) + per_generation, 0
        while len(seen) < budget and tries < 50 * per_generation:
            tries += 1
            evaluate(mutate(spec, rng.choice(front).config, rng))
    return list(seen.values())
