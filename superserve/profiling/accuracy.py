"""Accuracy of actuated SubNets, and the fixed calibration batches SubnetNorm is computed from."""
from __future__ import annotations

from typing import Callable, Iterable

import torch

from ..datasets import Split
from ..supernet import SubNetConfig, SuperResNet


@torch.inference_mode()
def top1_correct(model: SuperResNet, config: SubNetConfig | str, split: Split, batch_size: int = 500) -> int:
    """Number of correct top-1 predictions of one SubNet on a split (eval mode)."""
    model.eval()
    model.actuate(config)
    correct = 0
    device = next(model.parameters()).device  # the split stays on the host; batches go to the model
    for i in range(0, len(split), batch_size):
        logits = model(split.normalized(i, i + batch_size).to(device))
        correct += int((logits.argmax(1).cpu() == split.labels[i:i + batch_size]).sum())
    return correct


def accuracy(model: SuperResNet, config: SubNetConfig | str, split: Split, batch_size: int = 500) -> float:
    return top1_correct(model, config, split, batch_size) / len(split)


def calibration_batches(train: Split, num_images: int = 2000, batch_size: int = 250,
                        seed: int = 0) -> Callable[[], Iterable[torch.Tensor]]:
    """The same seeded training images every call, as calibrate() requires."""
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:num_images]
    x = train.take(idx).normalized()
    chunks = [x[i:i + batch_size] for i in range(0, min(num_images, len(x)), batch_size)]
    return lambda: iter(chunks)
