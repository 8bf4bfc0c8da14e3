"""A catalog: the served SubNets of one SuperNet as boxes, with their accuracies.

Everything the cost model and the scheduler need, as arrays indexed by SubNet: the box of
every SubNet (shape (subnets, tensors, MAX_RANK)), its accuracy, and its *private* bytes:
per-SubNet data no other SubNet reads (SubnetNorm's mean and variance rows), fetched with
every query of that SubNet.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from superserve.subgraph.space import WeightSpace


@dataclass(frozen=True)
class Catalog:
    space: WeightSpace
    ids: tuple[str, ...]
    boxes: np.ndarray  # (subnets, tensors, MAX_RANK)
    accuracy: np.ndarray  # (subnets,) in [0, 1]
    private_bytes: np.ndarray  # (subnets,) fetched on every query of that SubNet
    meta: dict[str, Any]

    def __post_init__(self) -> None:
        n = len(self.ids)
        if n == 0:
            raise ValueError("a catalog needs at least one SubNet")
        if self.boxes.shape != (n,) + self.space.full.shape:
            raise ValueError(f"boxes must have shape {(n,) + self.space.full.shape}, got {self.boxes.shape}")
        if self.accuracy.shape != (n,) or self.private_bytes.shape != (n,):
            raise ValueError("one accuracy and one private byte count per SubNet")

    def __len__(self) -> int:
        return len(self.ids)

    def weight_bytes(self) -> np.ndarray:
        """Shared-weight bytes each SubNet reads."""
        return self.space.elements(self.boxes).sum(axis=1) * self.space.element_bytes

    def macs(self) -> np.ndarray:
        return self.space.layer_macs(self.boxes).sum(axis=1)

    def index_of(self, subnet_id: str) -> int:
        return self.ids.index(subnet_id)

    @property
    def smallest(self) -> int:
        """The SubNet reading the fewest bytes."""
        return int(np.argmin(self.weight_bytes() + self.private_bytes))

    @property
    def largest(self) -> int:
        return int(np.argmax(self.weight_bytes() + self.private_bytes))
