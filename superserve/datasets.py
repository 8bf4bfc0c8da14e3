"""Fashion-MNIST from IDX files (Debian's `dataset-fashion-mnist`, or a directory the user gives)."""
from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DEFAULT_FMNIST = Path("/usr/share/datasets/fashion-mnist")
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST pixel statistics (training set)
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@dataclass
class Split:
    images: torch.Tensor  # uint8, N x 28 x 28
    labels: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return self.labels.numel()

    def normalized(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        return normalize(self.images[start:stop])


def normalize(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 N x 28 x 28 -> float32 N x 1 x 28 x 28, the SuperNet's input."""
    return ((images_u8.float() / 255.0 - MEAN) / STD).unsqueeze(1)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise ValueError(f"{path}: not an IDX file (too short)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: truncated ({body.size} bytes for shape {dims})")
    return body.reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).exists():
            return root / name
    raise FileNotFoundError(
        f"{root}/{stem}[.gz] not found. Install Debian's dataset-fashion-mnist "
        f"(apt-get install dataset-fashion-mnist) or pass --data DIR with the IDX files")


def load_fashion_mnist(root: str | Path = DEFAULT_FMNIST) -> tuple[Split, Split]:
    """(train, test) splits: 60,000 and 10,000 images."""
    root = Path(root)
    out = []
    for prefix in ("train", "t10k"):
        images = _read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
        labels = _read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{root}: {prefix} has {images.shape[0]} images but {labels.shape[0]} labels")
        out.append(Split(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))))
    return out[0], out[1]


def train_val_split(train: Split, val_size: int = 5000, seed: int = 0) -> tuple[Split, Split]:
    """Hold out a fixed, seeded validation split from the training set."""
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    return (Split(train.images[train_idx], train.labels[train_idx]),
            Split(train.images[val_idx], train.labels[val_idx]))
