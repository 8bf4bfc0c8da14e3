"""The layout of a SuperNet bundle: which file holds what, and in which format.

A bundle is a directory with
  weights.safetensors     SuperNet weights (spec in the metadata)
  subnetnorm.safetensors  SubnetNorm table of the served (Pareto) SubNets
  profile.json            latency profile of those SubNets (LatencyProfile format)
  subset.safetensors      a labelled test subset (uint8 images), for clients and checks
  subset_accuracy.json    how many subset images each served SubNet gets right (optional)
  data.json               the input the SuperNet expects (optional; absent: Fashion-MNIST's):
                          {"format": "superserve-data/1", "input_shape": [C, H, W],
                           "mean": [per channel], "std": [per channel], "classes": [names]};
                          a UINT8 pixel x of channel c is fed as (x / 255 - mean[c]) / std[c]
The embedded default ships inside the package, and so does a ViT SuperNet (`--bundle vit`,
superserve/supernet/vit); a user's own SuperNet is a bundle with the same layout
(`superserve serve --bundle DIR`). This module names the files (and reads the small
data.json) only: it imports nothing of superserve and no torch, so the router, the load client
and the simulator can read a bundle without torch.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

WEIGHTS = "weights.safetensors"
NORM = "subnetnorm.safetensors"
PROFILE = "profile.json"
SUBSET = "subset.safetensors"
SUBSET_ACCURACY = "subset_accuracy.json"
DATA = "data.json"
REQUIRED = (WEIGHTS, NORM, PROFILE)  # what serving needs; the subset is for clients and checks

# The "format" entry each file's metadata carries.
WEIGHTS_FORMAT = "superserve-supernet/1"
NORM_FORMAT = "superserve-subnetnorm/1"
PROFILE_FORMAT = "superserve-profile/1"
SUBSET_FORMAT = "superserve-subset/1"
DATA_FORMAT = "superserve-data/1"

# Fashion-MNIST's, the embedded SuperNet's (and any bundle's without data.json).
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530
FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

EMBEDDED_DIR = Path(__file__).resolve().parent / "data" / "embedded"
EMBEDDED_VIT_DIR = Path(__file__).resolve().parent / "data" / "embedded_vit"
# Bundles shipped inside the package, by the name `--bundle NAME` accepts (a directory of
# that name, if one exists, wins: a name is only a shorthand).
EMBEDDED_BUNDLES = {"embedded": EMBEDDED_DIR, "resnet": EMBEDDED_DIR, "vit": EMBEDDED_VIT_DIR}


def resolve_bundle(root: str | Path) -> Path:
    """The directory of a bundle given as a path or as the name of a shipped one ("vit")."""
    path = Path(root)
    if not path.exists() and str(root) in EMBEDDED_BUNDLES:
        return EMBEDDED_BUNDLES[str(root)]
    return path


@dataclass(frozen=True)
class BundleLayout:
    """The paths of one bundle's files."""

    root: Path

    def __init__(self, root: str | Path = EMBEDDED_DIR) -> None:
        object.__setattr__(self, "root", resolve_bundle(root))

    @property
    def weights(self) -> Path:
        return self.root / WEIGHTS

    @property
    def norm(self) -> Path:
        return self.root / NORM

    @property
    def profile(self) -> Path:
        return self.root / PROFILE

    @property
    def subset(self) -> Path:
        return self.root / SUBSET

    @property
    def subset_accuracy(self) -> Path:
        return self.root / SUBSET_ACCURACY

    @property
    def data(self) -> Path:
        return self.root / DATA

    def data_info(self) -> "DataInfo":
        """The bundle's input description (data.json), Fashion-MNIST's when it has none."""
        return DataInfo.load(self.data) if self.data.exists() else DataInfo.fashion_mnist()

    def missing(self, names: tuple[str, ...] = REQUIRED) -> list[str]:
        """The files of ``names`` this bundle lacks."""
        return [n for n in names if not (self.root / n).exists()]

    def require(self, names: tuple[str, ...] = REQUIRED) -> "BundleLayout":
        """Raise a FileNotFoundError that says what to do when a file of ``names`` is missing."""
        missing = self.missing(names)
        if missing:
            raise FileNotFoundError(
                f"{self.root} is not a complete SuperNet bundle (missing {', '.join(missing)}); build one with "
                "`superserve train` then `superserve search`, or pass --bundle DIR (layout: "
                "superserve/bundle_layout.py)")
        return self


@dataclass(frozen=True)
class DataInfo:
    """What a bundle's SuperNet takes: images of ``input_shape`` (C, H, W), normalised per
    channel as (pixel / 255 - mean[c]) / std[c], and the names of its output classes."""

    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        shape = tuple(self.input_shape)
        if len(shape) != 3 or any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in shape):
            raise ValueError(f"input_shape must be three positive integers [C, H, W], got {list(shape)}")
        c = shape[0]
        for name in ("mean", "std"):
            v = getattr(self, name)
            if len(v) != c or any(not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x)
                                  for x in v):
                raise ValueError(f"{name} must be {c} finite numbers (one per channel), got {list(v)}")
        if any(x <= 0 for x in self.std):
            raise ValueError(f"std must be positive, got {list(self.std)}")
        if not self.classes or any(not isinstance(n, str) for n in self.classes):
            raise ValueError("classes must be a non-empty list of names")
        object.__setattr__(self, "input_shape", tuple(int(d) for d in shape))
        object.__setattr__(self, "mean", tuple(float(x) for x in self.mean))
        object.__setattr__(self, "std", tuple(float(x) for x in self.std))
        object.__setattr__(self, "classes", tuple(self.classes))

    @classmethod
    def fashion_mnist(cls) -> "DataInfo":
        return cls((1, 28, 28), (FMNIST_MEAN,), (FMNIST_STD,), FMNIST_CLASSES)

    @property
    def channels(self) -> int:
        return self.input_shape[0]

    def to_dict(self) -> dict:
        return {"format": DATA_FORMAT, "input_shape": list(self.input_shape), "mean": list(self.mean),
                "std": list(self.std), "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, d: dict, where: str = "data info") -> "DataInfo":
        if not isinstance(d, dict) or d.get("format") != DATA_FORMAT:
            fmt = d.get("format") if isinstance(d, dict) else None
            raise ValueError(f"{where}: format {fmt!r}, expected {DATA_FORMAT!r}")
        try:
            return cls(tuple(d["input_shape"]), tuple(d["mean"]), tuple(d["std"]), tuple(d["classes"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "DataInfo":
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable data description ({exc})") from None
        return cls.from_dict(d, str(path))


EMBEDDED = BundleLayout(EMBEDDED_DIR)
