"""SubnetNorm calibration: per-SubNet BatchNorm statistics from forward passes over data.

As in OFA's recalibration: run each SubNet in training-mode normalisation (batch statistics)
over a few batches, record every norm layer's per-batch channel mean and variance, and store
their averages in that SubNet's row of the table.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch

from .config import SubNetConfig
from .ofa.base import OFASuperNet
from .ofa.space import MobileChoice, ResNetChoice
from .ops import SubnetNorm
from .resnet import SuperResNet


@torch.no_grad()
def calibrate(
    model: SuperResNet | OFASuperNet,
    configs: Sequence[SubNetConfig | ResNetChoice | MobileChoice],
    batches: Callable[[], Iterable[torch.Tensor]],
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Compute and store SubnetNorm statistics for `configs` (replacing the table).

    `batches()` must yield input batches afresh each call (the same ones for every SubNet,
    so that the table is reproducible).
    """
    unique = list(dict((c.id, c) for c in configs).values())
    norms = [m for _, m in model.norm_modules()]
    if not norms:  # LayerNorm families (transformers): nothing to compute, only the served set
        model.set_norm_rows([c.id for c in unique])
        return
    rows: dict[SubnetNorm, list] = {mod: [] for mod in norms}
    sums: dict[SubnetNorm, list] = {}

    def observe(mod: SubnetNorm, x: torch.Tensor) -> None:
        mean = x.mean(dim=(0, 2, 3))
        var = (x - mean[None, :, None, None]).pow(2).mean(dim=(0, 2, 3))
        acc = sums.setdefault(mod, [torch.zeros_like(mean), torch.zeros_like(var), 0])
        acc[0] += mean
        acc[1] += var
        acc[2] += 1

    was_training = model.training
    for mod in norms:
        mod.observer = observe
    try:
        model.train()  # batch statistics flow forward, as when these SubNets were trained
        for i, config in enumerate(unique):
            sums.clear()
            model.actuate(config)
            for x in batches():
                model(x)
            for mod in norms:  # layers this SubNet skips get no row entry
                acc = sums.get(mod)
                rows[mod].append(None if acc is None else (acc[0] / acc[2], acc[1] / acc[2]))
            if progress is not None:
                progress(i + 1, len(unique))
    finally:
        for mod in norms:
            mod.observer = None
        model.train(was_training)
    for mod in norms:
        mod.set_table(rows[mod])
    model.set_norm_rows([c.id for c in unique])  # rebuild plans: they now point at calibrated rows
