"""Training data: Fashion-MNIST from IDX files (Debian's `dataset-fashion-mnist`, or a directory
the user gives), or any image folder (``root/<class>/<images>``, see ``load_image_folder``)."""
from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .bundle_layout import FMNIST_CLASSES, FMNIST_MEAN, FMNIST_STD

DEFAULT_FMNIST = Path("/usr/share/datasets/fashion-mnist")
MEAN, STD = FMNIST_MEAN, FMNIST_STD  # Fashion-MNIST pixel statistics (training set)
CLASSES = FMNIST_CLASSES


@dataclass
class Split:
    images: torch.Tensor  # uint8, N x H x W (one channel) or N x C x H x W
    labels: torch.Tensor  # int64, N
    mean: tuple[float, ...] = (MEAN,)  # per channel, of pixel / 255
    std: tuple[float, ...] = (STD,)

    def __len__(self) -> int:
        return self.labels.numel()

    def normalized(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        return normalize(self.images[start:stop], self.mean, self.std)

    def take(self, idx) -> "Split":
        """The images and labels at ``idx`` (a slice or an index tensor), same normalisation."""
        return Split(self.images[idx], self.labels[idx], self.mean, self.std)


def normalize(images_u8: torch.Tensor, mean: tuple[float, ...] = (MEAN,),
              std: tuple[float, ...] = (STD,)) -> torch.Tensor:
    """uint8 N x H x W (or N x C x H x W) -> float32 N x C x H x W, the SuperNet's input:
    (pixel / 255 - mean[c]) / std[c]."""
    x = images_u8.float() / 255.0
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if len(mean) == 1:  # python scalars: Fashion-MNIST's inputs stay bit-identical
        return (x - mean[0]) / std[0]
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - m) / s


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


def holdout_size(n: int, requested: int = 5000) -> int:
    """Validation images held out of ``n`` training images: ``requested``, at most a fifth
    (Fashion-MNIST's 60,000 keep their 5,000; a small folder keeps most images to train on)."""
    return max(1, min(requested, n // 5))


def train_val_split(train: Split, val_size: int = 5000, seed: int = 0) -> tuple[Split, Split]:
    """Hold out a fixed, seeded validation split from the training set."""
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    return train.take(train_idx), train.take(val_idx)


# --- image folders ------------------------------------------------------------------------------
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TRAIN_DIRS, TEST_DIRS = ("train",), ("test", "val")
MAX_IMAGES = 200_000  # images held in memory as uint8; a larger folder is refused, not half-read


@dataclass
class ImageFolder:
    """An image folder read into memory: the splits (normalised with the training split's
    statistics), the class names (sorted) and the image files per split."""

    train: Split
    test: Split
    classes: tuple[str, ...]
    channels: int
    size: int

    @property
    def mean(self) -> tuple[float, ...]:
        return self.train.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.train.std


def is_idx_dir(root: str | Path) -> bool:
    """Whether ``root`` holds Fashion-MNIST-style IDX files (else: an image folder)."""
    root = Path(root)
    return any((root / f"train-images-idx3-ubyte{ext}").exists() for ext in ("", ".gz"))


def _class_files(root: Path) -> dict[str, list[Path]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    out = {}
    for c in classes:
        files = sorted(p for p in (root / c).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        out[c] = files
    return out


def image_channels(path: Path) -> int:
    """1 for a grayscale image file, else 3."""
    from PIL import Image

    with Image.open(path) as im:
        return 1 if im.mode in ("1", "L", "LA", "I", "I;16", "F") else 3


def _read_images(files: list[Path], size: int, channels: int) -> tuple[np.ndarray, list[str]]:
    """uint8 N x C x size x size, and the files that could not be read (with why)."""
    from PIL import Image, UnidentifiedImageError

    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(files), channels, size, size), dtype=np.uint8)
    bad = []
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                im = im.convert(mode)
                if im.size != (size, size):
                    im = im.resize((size, size), Image.BILINEAR)
                a = np.asarray(im, dtype=np.uint8)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
            bad.append(f"{f} ({type(exc).__name__}: {exc})")
            continue
        out[i] = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return out, bad


def _load_files(per_class: dict[str, list[Path]], classes: tuple[str, ...], size: int,
                channels: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    files, labels = [], []
    for k, c in enumerate(classes):
        files += per_class.get(c, [])
        labels += [k] * len(per_class.get(c, []))
    images, bad = _read_images(files, size, channels)
    return torch.from_numpy(images), torch.tensor(labels, dtype=torch.int64), bad


def channel_stats(images_u8: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of pixel / 255 over N x C x H x W images (std at least 1e-3)."""
    x = images_u8.double() / 255.0
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3), unbiased=False).clamp_min(1e-3)
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def load_image_folder(root: str | Path, size: int, channels: int | None = None, test_fraction: float = 0.2,
                      seed: int = 0, mean: tuple[float, ...] | None = None,
                      std: tuple[float, ...] | None = None) -> ImageFolder:
    """An ImageFolder-style directory: ``root/<class>/<images>`` (PNG, JPEG, BMP; any size,
    resized to ``size`` x ``size``), or ``root/train/<class>/...`` with ``root/test/`` (or
    ``root/val/``) beside it. Without such split directories a seeded ``test_fraction`` of
    each class is held out as the test split. Classes are the sub-directory names, sorted.
    ``channels``: 1 (grayscale) or 3 (RGB); None: the first image's (grayscale modes 1, else 3).
    ``mean``/``std``: the normalisation to use (a trained SuperNet's); None: computed per
    channel on the training split. Every file is read before anything is returned: a folder
    with unreadable images is refused with a ValueError naming a few of them."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory (expected an image folder root/<class>/<images>)")
    if size < 1:
        raise ValueError(f"image size must be positive, got {size}")
    train_dir = next((root / d for d in TRAIN_DIRS if (root / d).is_dir()), None)
    test_dir = next((root / d for d in TEST_DIRS if (root / d).is_dir()), None)
    if (train_dir is None) != (test_dir is None):
        raise ValueError(f"{root}: has {'train/' if train_dir else 'test/ or val/'} but not "
                         f"{'test/ (or val/)' if train_dir else 'train/'}; give both split directories or neither")
    if train_dir is not None:
        train_files, test_files = _class_files(train_dir), _class_files(test_dir)
        extra = sorted(set(test_files) - set(train_files))
        if extra:
            raise ValueError(f"{test_dir}: classes {extra[:5]} have no training images in {train_dir}")
        classes = tuple(sorted(train_files))
    else:
        per_class = _class_files(root)
        classes = tuple(sorted(per_class))
        gen = torch.Generator().manual_seed(seed)
        train_files, test_files = {}, {}
        for c in classes:
            files = per_class[c]
            perm = torch.randperm(len(files), generator=gen).tolist()
            n_test = int(round(len(files) * test_fraction)) if len(files) > 1 else 0
            test_files[c] = sorted(files[i] for i in perm[:n_test])
            train_files[c] = sorted(files[i] for i in perm[n_test:])
    where = train_dir or root
    if len(classes) < 2:
        raise ValueError(f"{where}: found {len(classes)} class directories; an image folder needs at least 2 "
                         "(root/<class_name>/<image files>)")
    empty = [c for c in classes if not train_files.get(c)]
    if empty:
        raise ValueError(f"{where}: classes without training images ({', '.join(IMAGE_SUFFIXES)}): {empty[:5]}")
    total = sum(len(v) for v in train_files.values()) + sum(len(v) for v in test_files.values())
    if total > MAX_IMAGES:
        raise ValueError(f"{root}: {total} images; at most {MAX_IMAGES} are read into memory")
    if not sum(len(v) for v in test_files.values()):
        raise ValueError(f"{root}: no test images (add more images per class, or a test/ directory)")
    if channels is None:
        channels = image_channels(train_files[classes[0]][0])
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    tr_x, tr_y, bad_tr = _load_files(train_files, classes, size, channels)
    te_x, te_y, bad_te = _load_files(test_files, classes, size, channels)
    bad = bad_tr + bad_te
    if bad:
        raise ValueError(f"{root}: {len(bad)} image file(s) could not be read; fix or remove them: "
                         + "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""))
    if mean is None or std is None:
        mean, std = channel_stats(tr_x)
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"normalisation has {len(mean)} means / {len(std)} stds for {channels} channel(s)")
    mean, std = tuple(mean), tuple(std)
    return ImageFolder(Split(tr_x, tr_y, mean, std), Split(te_x, te_y, mean, std), classes, channels, size)
