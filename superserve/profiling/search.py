"""Pareto search over the SubNet space: accuracy (validation split) against cost (MACs).

The space of the embedded SuperNet holds ~5 million SubNets, too many to evaluate, so the search
is evolutionary as in OFA: random SubNets seed the population, then each generation mutates the
current Pareto front (one depth, expand ratio or width changed) and keeps what is new. Every
candidate is calibrated (SubnetNorm) before it is measured, so its accuracy is the one it will
be served with.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from ..datasets import Split
from ..supernet import SubNetConfig, SuperNetSpec, SuperResNet, calibrate, subnet_cost
from .accuracy import accuracy


@dataclass(frozen=True)
class Candidate:
    config: SubNetConfig
    val_accuracy: float
    macs: int
    params: int


def pareto_front(cands: Iterable[Candidate]) -> list[Candidate]:
    """Candidates no other candidate beats on both cost and accuracy, by ascending cost."""
    front, best = [], -1.0
    for c in sorted(cands, key=lambda c: (c.macs, -c.val_accuracy)):
        if c.val_accuracy > best:
            front.append(c)
            best = c.val_accuracy
    return front


def mutate(spec: SuperNetSpec, config: SubNetConfig, rng: random.Random) -> SubNetConfig:
    depths = list(config.depths)
    expands = [list(e) for e in config.expands]
    width = config.width
    what = rng.choice(("depth", "expand", "width"))
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
    initial: int = 120,
    generations: int = 4,
    per_generation: int = 50,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
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
        macs, params = subnet_cost(spec, config)
        seen[config.id] = Candidate(config, accuracy(model, config, val), macs, params)
        if progress is not None:
            progress(len(seen), total)

    for config in [spec.smallest(), spec.largest()]:
        evaluate(config)
    while len(seen) < initial + 2:
        evaluate(spec.sample(rng))
    for _ in range(generations):
        front = pareto_front(seen.values())
        budget, tries = len(seen) + per_generation, 0
        while len(seen) < budget and tries < 50 * per_generation:
            tries += 1
            evaluate(mutate(spec, rng.choice(front).config, rng))
    return list(seen.values())
