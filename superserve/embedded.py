"""The embedded default: a trained Fashion-MNIST SuperNet shipped inside the package, and
loading any bundle (the files are listed in superserve/bundle_layout.py) into a model.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from .bundle_layout import EMBEDDED_DIR, SUBSET_FORMAT, BundleLayout, DataInfo
from .datasets import Split
from .scheduling.profile import LatencyProfile
from .supernet import SubNetConfig, SuperResNet, load_supernet
from .supernet.ofa.space import MobileChoice, ResNetChoice
from .supernet.ofa.base import OFASuperNet
from .supernet.checkpoint import read_safetensors

__all__ = ["EMBEDDED_DIR", "SUBSET_FORMAT", "Bundle", "load_bundle", "save_subset", "load_subset"]


@dataclass
class Bundle:
    root: Path
    model: SuperResNet | OFASuperNet  # eval mode, every served SubNet calibrated
    profile: LatencyProfile

    @property
    def layout(self) -> BundleLayout:
        return BundleLayout(self.root)

    @property
    def weights_path(self) -> Path:
        return self.layout.weights

    @property
    def norm_path(self) -> Path:
        return self.layout.norm

    @property
    def profile_path(self) -> Path:
        return self.layout.profile

    @property
    def subset_path(self) -> Path:
        return self.layout.subset

    def configs(self) -> list[SubNetConfig | ResNetChoice | MobileChoice]:
        return [self.model.config_from_id(s.id) for s in self.profile.subnets]

    @property
    def data_info(self) -> DataInfo:
        """The input the model takes (data.json; Fashion-MNIST's if the bundle has none)."""
        return self.layout.data_info()

    def subset(self) -> Split:
        """The labelled subset, normalised as the model expects (``.normalized()``)."""
        info = self.data_info
        return load_subset(self.subset_path, info.mean, info.std)


def load_bundle(root: str | Path = EMBEDDED_DIR) -> Bundle:
    layout = BundleLayout(root).require()
    model = load_supernet(layout.weights, layout.norm)
    profile = LatencyProfile.load(layout.profile)
    missing = [s.id for s in profile.subnets if s.id not in model.norm_rows]
    if missing:
        raise ValueError(f"{layout.root}: profile lists SubNets without SubnetNorm statistics: {missing[:3]}")
    return Bundle(layout.root, model, profile)


def save_subset(split: Split, path: str | Path) -> None:
    save_file({"images": split.images.contiguous(), "labels": split.labels.contiguous()}, str(path),
              metadata={"format": SUBSET_FORMAT})


def load_subset(path: str | Path, mean: tuple[float, ...] | None = None,
                std: tuple[float, ...] | None = None) -> Split:
    """uint8 N x H x W (one channel) or N x C x H x W images with N labels."""
    tensors, _ = read_safetensors(path, SUBSET_FORMAT)
    images, labels = tensors["images"], tensors["labels"]
    if images.dtype != torch.uint8 or images.ndim not in (3, 4) or images.shape[0] != labels.shape[0]:
        raise ValueError(f"{path}: expected uint8 N x H x W (or N x C x H x W) images with N labels")
    if mean is None or std is None:
        return Split(images, labels)
    return Split(images, labels, tuple(mean), tuple(std))
