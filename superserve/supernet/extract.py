"""Extraction: a standalone plain-PyTorch model of one SubNet, with copied weights and its own
BatchNorm statistics. It is the reference in equivalence tests, the baseline of the memory
comparison, and what a single-model server (the paper's Clipper+) loads."""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from .checkpoint import load_into, read_safetensors
from .config import SubNetConfig, SuperNetSpec, active_channels
from .ops import SlicedConv2d, SubnetNorm
from .resnet import UNCALIBRATED, Bottleneck, SuperResNet


class PlainBottleneck(nn.Module):
    def __init__(self, cin: int, mid: int, out: int, stride: int, project: bool) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv2, self.bn2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, out, 1, bias=False), nn.BatchNorm2d(out)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))
            if project else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        return F.relu(self.bn3(self.conv3(h)) + self.shortcut(x))


class PlainResNet(nn.Module):
    """The architecture of one SubNet, nothing elastic about it."""

    def __init__(self, spec: SuperNetSpec, config: SubNetConfig) -> None:
        super().__init__()
        self.spec, self.config = spec, config
        stem = active_channels(spec.stem_channels, config.width)
        layers: list[nn.Module] = [
            nn.Conv2d(spec.in_channels, stem, 3, spec.stem_stride, 1, bias=False),
            nn.BatchNorm2d(stem), nn.ReLU(),
        ]
        if spec.stem_pool:
            layers.append(nn.MaxPool2d(3, 2, 1))
        cin = stem
        for m, c in enumerate(spec.stage_channels):
            out = active_channels(c, config.width)
            for i, e in enumerate(config.expands[m]):
                stride = spec.stage_strides[m] if i == 0 else 1
                layers.append(PlainBottleneck(cin, active_channels(out, e), out, stride, i == 0))
                cin = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


def _copy_conv(dst: nn.Conv2d, src: SlicedConv2d) -> None:
    dst.weight.copy_(src.weight[: dst.out_channels, : dst.in_channels])


def _copy_norm(dst: nn.BatchNorm2d, src: SubnetNorm, row: int) -> None:
    c = dst.num_features
    dst.weight.copy_(src.weight[:c])
    dst.bias.copy_(src.bias[:c])
    off = src._offsets[row]
    dst.running_mean.copy_(src.stats[0, off:off + c])
    dst.running_var.copy_(src.stats[1, off:off + c])
    dst.eps = src.eps


@torch.no_grad()
def extract(supernet: SuperResNet, config: SubNetConfig) -> PlainResNet:
    """Copy one calibrated SubNet out of the SuperNet into a PlainResNet (eval mode)."""
    plan = supernet.plan(config)
    if plan.norm_row == UNCALIBRATED:
        raise ValueError(f"SubNet {config.id} is not calibrated; calibrate it before extracting")
    row = plan.norm_row
    model = PlainResNet(supernet.spec, config)
    feats = iter(model.features)
    _copy_conv(next(feats), supernet.stem_conv)
    _copy_norm(next(feats), supernet.stem_bn, row)
    for stage, depth in zip(supernet.stages, config.depths):
        for src in list(stage.blocks)[:depth]:
            dst = next(feats)
            while not isinstance(dst, PlainBottleneck):  # skip ReLU / MaxPool
                dst = next(feats)
            assert isinstance(src, Bottleneck)
            for conv, bn in (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")):
                _copy_conv(getattr(dst, conv), getattr(src, conv))
                _copy_norm(getattr(dst, bn), getattr(src, bn), row)
            if src.project:
                _copy_conv(dst.shortcut[0], src.down_conv)
                _copy_norm(dst.shortcut[1], src.down_bn, row)
    n_in = model.classifier.in_features
    model.classifier.weight.copy_(supernet.classifier.weight[:, :n_in])
    model.classifier.bias.copy_(supernet.classifier.bias)
    return model.eval()


def save_extracted(model: PlainResNet, path: str | Path) -> None:
    meta = {"format": "superserve-extracted/1", "spec": json.dumps(model.spec.to_dict()),
            "config": json.dumps(model.config.to_dict())}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)


def load_extracted(path: str | Path) -> PlainResNet:
    """Load a standalone SubNet (safetensors; architecture from the file's metadata)."""
    tensors, meta = read_safetensors(path, "superserve-extracted/1")
    model = PlainResNet(SuperNetSpec.from_dict(json.loads(meta["spec"])),
                        SubNetConfig.from_dict(json.loads(meta["config"])))
    load_into(model, tensors, path)
    return model.eval()
