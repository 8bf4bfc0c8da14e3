"""The embedded default: a trained Fashion-MNIST SuperNet shipped inside the package.

A bundle is a directory with
  weights.safetensors     SuperNet weights (spec in the metadata)
  subnetnorm.safetensors  SubnetNorm table of the served (Pareto) SubNets
  profile.json            latency profile of those SubNets (LatencyProfile format)
  subset.safetensors      a labelled 2,000-image subset of the test set (uint8 images)
A user's own SuperNet is a bundle with the same layout (`superserve serve --bundle DIR`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from .datasets import Split
from .profiling.latency_profile import LatencyProfile
from .supernet import SubNetConfig, SuperResNet, load_supernet
from .supernet.checkpoint import read_safetensors

EMBEDDED_DIR = Path(__file__).parent / "data" / "embedded"
SUBSET_FORMAT = "superserve-subset/1"


@dataclass
class Bundle:
    root: Path
    model: SuperResNet  # eval mode, every served SubNet calibrated
    profile: LatencyProfile

    @property
    def weights_path(self) -> Path:
        return self.root / "weights.safetensors"

    @property
    def norm_path(self) -> Path:
        return self.root / "subnetnorm.safetensors"

    @property
    def profile_path(self) -> Path:
        return self.root / "profile.json"

    @property
    def subset_path(self) -> Path:
        return self.root / "subset.safetensors"

    def configs(self) -> list[SubNetConfig]:
        return [SubNetConfig.from_id(s.id) for s in self.profile.subnets]

    def subset(self) -> Split:
        return load_subset(self.subset_path)


def load_bundle(root: str | Path = EMBEDDED_DIR) -> Bundle:
    root = Path(root)
    if not (root / "weights.safetensors").exists():
        raise FileNotFoundError(
            f"no SuperNet bundle at {root} (weights.safetensors missing). The embedded default is "
            "built by `superserve train` then `superserve search`; your own needs the files listed in "
            "superserve/embedded.py")
    model = load_supernet(root / "weights.safetensors", root / "subnetnorm.safetensors")
    profile = LatencyProfile.load(root / "profile.json")
    missing = [s.id for s in profile.subnets if s.id not in model.norm_rows]
    if missing:
        raise ValueError(f"{root}: profile lists SubNets without SubnetNorm statistics: {missing[:3]}")
    return Bundle(root, model, profile)


def save_subset(split: Split, path: str | Path) -> None:
    save_file({"images": split.images.contiguous(), "labels": split.labels.contiguous()}, str(path),
              metadata={"format": SUBSET_FORMAT})


def load_subset(path: str | Path) -> Split:
    tensors, _ = read_safetensors(path, SUBSET_FORMAT)
    images, labels = tensors["images"], tensors["labels"]
    if images.dtype != torch.uint8 or images.ndim != 3 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"{path}: expected uint8 N x H x W images with N labels")
    return Split(images, labels)
