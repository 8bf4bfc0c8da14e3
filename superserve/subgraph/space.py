"""SubGraph algebra over the weight boxes of a nested weight-shared SuperNet.

In a SuperNet with nested weights (ours, OFA's) a SubNet reads, from every max-size weight
tensor, one *box*: the leading channels along each channel dimension and a centred crop
along each kernel dimension (blocks a SubNet skips: an empty box). Two SubNets therefore
share, tensor by tensor, exactly the smaller of their two boxes, and the weights shared by a
set of SubNets is the elementwise minimum of their boxes. That minimum is itself a box, so a
*SubGraph* (what an accelerator keeps stationary in its buffer) is represented the same way.

A box is an int64 array of shape (tensors, MAX_RANK): extent per dimension, padded with 1
past a tensor's rank; an unused tensor has every extent 0 (its volume is then 0). The union
of two boxes is not a box in general (an L shape); :func:`union_elements` counts it exactly
and :func:`hull` gives the smallest box holding it.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

MAX_RANK = 4


@dataclass(frozen=True)
class TensorSpec:
    """One max-size weight tensor of a SuperNet.

    ``layer``: the roofline unit it belongs to (a convolution and its norm): tensors of one
    layer are fetched and used together. ``macs_per_element``: how many multiply-accumulates
    each weight element takes part in per image (a convolution: its output positions, a
    depthwise one too; a linear layer: 1; norm parameters and biases: 0). ``centred``: the
    dimensions cropped around their centre (kernel sizes) rather than from index 0.
    """

    name: str
    shape: tuple[int, ...]
    layer: str
    macs_per_element: int = 0
    centred: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= len(self.shape) <= MAX_RANK or any(d < 1 for d in self.shape):
            raise ValueError(f"{self.name}: shape must have 1..{MAX_RANK} positive dims, got {self.shape}")
        if any(not 0 <= d < len(self.shape) for d in self.centred):
            raise ValueError(f"{self.name}: centred dims {self.centred} out of range")


class WeightSpace:
    """The tensors of one SuperNet in execution order, the bytes of an element, and box
    arithmetic over them (all vectorised: a box is one small integer array)."""

    def __init__(self, name: str, tensors: Sequence[TensorSpec], element_bytes: int) -> None:
        if not tensors:
            raise ValueError("a weight space needs at least one tensor")
        names = [t.name for t in tensors]
        if len(set(names)) != len(names):
            raise ValueError("tensor names must be unique")
        if element_bytes < 1:
            raise ValueError("element_bytes must be >= 1")
        self.name = name
        self.tensors = tuple(tensors)
        self.element_bytes = int(element_bytes)
        self.index = {t.name: i for i, t in enumerate(self.tensors)}
        self.layers: tuple[str, ...] = tuple(dict.fromkeys(t.layer for t in self.tensors))
        layer_index = {name: k for k, name in enumerate(self.layers)}
        self.layer_of = np.array([layer_index[t.layer] for t in self.tensors], dtype=np.int64)
        self.macs_per_element = np.array([t.macs_per_element for t in self.tensors], dtype=np.int64)
        self.full = self._pad({t.name: t.shape for t in self.tensors})
        # (tensors, layers) 0/1 matrix: per-tensor volumes @ it = per-layer volumes
        self._to_layers = np.zeros((len(self.tensors), len(self.layers)), dtype=np.int64)
        self._to_layers[np.arange(len(self.tensors)), self.layer_of] = 1

    def __len__(self) -> int:
        return len(self.tensors)

    def _pad(self, extents: Mapping[str, Sequence[int]]) -> np.ndarray:
        box = np.zeros((len(self.tensors), MAX_RANK), dtype=np.int64)
        for name, ext in extents.items():
            i = self.index.get(name)
            if i is None:
                raise KeyError(f"{self.name} has no tensor {name!r}")
            rank = len(self.tensors[i].shape)
            if len(ext) != rank:
                raise ValueError(f"{name}: box has {len(ext)} extents, the tensor has rank {rank}")
            row = list(ext) + [1] * (MAX_RANK - rank)
            if any(e == 0 for e in ext):
                row = [0] * MAX_RANK
            box[i] = row
        return box

    # --- building boxes ------------------------------------------------------------------
    def box(self, extents: Mapping[str, Sequence[int]]) -> np.ndarray:
        """The box reading ``extents[name]`` of each named tensor (others: nothing)."""
        box = self._pad(extents)
        if np.any(box > self.full):
            bad = [self.tensors[i].name for i in np.nonzero(np.any(box > self.full, axis=1))[0]]
            raise ValueError(f"box exceeds the max shape of {bad[:3]}")
        return box

    def empty(self) -> np.ndarray:
        return np.zeros_like(self.full)

    def slices(self, box: np.ndarray, name: str) -> tuple[slice, ...] | None:
        """The index slices of tensor ``name`` the box covers (None: none of it); centred
        dimensions are cropped around the centre, as kernel-size nesting does."""
        t = self.tensors[self.index[name]]
        ext = box[self.index[name], :len(t.shape)]
        if not np.all(ext > 0):
            return None
        out = []
        for d, (e, full) in enumerate(zip(ext.tolist(), t.shape)):
            start = (full - e) // 2 if d in t.centred else 0
            out.append(slice(start, start + e))
        return tuple(out)

    # --- measuring -----------------------------------------------------------------------
    def elements(self, box: np.ndarray) -> np.ndarray:
        """Elements per tensor (works on a stack of boxes too: shape (..., tensors))."""
        return np.prod(box, axis=-1)

    def nbytes(self, box: np.ndarray) -> int:
        return int(self.elements(box).sum()) * self.element_bytes

    def layer_elements(self, box: np.ndarray) -> np.ndarray:
        """Elements per layer, shape (..., layers)."""
        return self.elements(box) @ self._to_layers

    def layer_macs(self, box: np.ndarray) -> np.ndarray:
        """Multiply-accumulates per layer for one image, shape (..., layers)."""
        return (self.elements(box) * self.macs_per_element) @ self._to_layers

    def fetch_bytes(self, subnet: np.ndarray, cached: np.ndarray) -> int:
        """Bytes a SubNet must bring from off-chip when ``cached`` stays in the buffer:
        bytes(S) - bytes(S intersect X)."""
        return self.nbytes(subnet) - self.nbytes(intersect(subnet, cached))


def intersect(*boxes: np.ndarray) -> np.ndarray:
    """The weights every box reads: the elementwise minimum."""
    if not boxes:
        raise ValueError("intersect needs at least one box")
    return np.minimum.reduce(boxes) if len(boxes) > 1 else boxes[0].copy()


def hull(*boxes: np.ndarray) -> np.ndarray:
    """The smallest box holding every box: the elementwise maximum (it holds more than the
    union when the boxes are not nested)."""
    if not boxes:
        raise ValueError("hull needs at least one box")
    return np.maximum.reduce(boxes) if len(boxes) > 1 else boxes[0].copy()


def covers(outer: np.ndarray, inner: np.ndarray) -> bool:
    """True when every weight ``inner`` reads lies in ``outer``."""
    used = np.prod(inner, axis=-1) > 0
    return bool(np.all(outer[used] >= inner[used]))


def union_elements(boxes: Iterable[np.ndarray]) -> np.ndarray:
    """Exact element count per tensor of the union of boxes (inclusion-exclusion over the
    intersections; boxes anchored at the same corner intersect in their minimum). Meant for
    a handful of boxes: 2^k terms."""
    bs = list(boxes)
    if not bs:
        raise ValueError("union_elements needs at least one box")
    if len(bs) > 16:
        raise ValueError("union_elements is exponential in the number of boxes; pass at most 16")
    total = np.zeros(bs[0].shape[0], dtype=np.int64)
    for k in range(1, len(bs) + 1):
        sign = 1 if k % 2 else -1
        for combo in itertools.combinations(bs, k):
            total += sign * np.prod(np.minimum.reduce(combo), axis=-1)
    return total
