"""OFA ResNet-50 (``ofa_resnet50``) as a SubNetAct SuperNet.

The architecture follows OFA's ``OFAResNets``: a three-conv stem whose middle conv is a
residual block that small SubNets skip, a 3x3/2 max-pool, four stages of bottleneck blocks
(2, 2, 4, 2 base blocks plus up to two more, LayerSelect), projection shortcuts through an
average pool and a 1x1 conv, and a linear classifier. Widths are elastic per stem layer and
per stage (WeightSlice over OFA's width multipliers), bottleneck widths per block (expand
ratio of the block's output width, rounded to a multiple of 8 as OFA does).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import LayerSelect, SlicedConv2d, SlicedLinear, SubnetNorm
from .base import OFASpec, OFASuperNet
from .space import ResNetChoice, make_divisible

STAGE_WIDTHS = (256, 512, 1024, 2048)
STAGE_STRIDES = (1, 2, 2, 2)
STEM_WIDTH = 64


@dataclass(frozen=True)
class ResNetPlan:
    """Everything a forward pass needs to run one SubNet, as plain integers."""

    subnet_id: str
    resolution: int
    stem_mid: int
    stem_residual: bool
    stem_out: int
    depths: tuple[int, ...]
    block_args: tuple[tuple[tuple[int, int, int], ...], ...]  # per stage, per active block: (mid, out, row)
    norm_row: int


def resnet_widths(spec: OFASpec) -> tuple[list[int], list[int], list[list[int]]]:
    """OFA's channel choices: stem middle, stem output and per-stage widths, one per width multiplier."""
    mults = sorted(spec.subnet_space.width_mults)
    stem_out = [make_divisible(STEM_WIDTH * w) for w in mults]
    stem_mid = [make_divisible(c // 2) for c in stem_out]
    stages = [[make_divisible(c * w) for w in mults] for c in STAGE_WIDTHS]
    return stem_mid, stem_out, stages


def resnet_plan(spec: OFASpec, choice: ResNetChoice, row: int) -> ResNetPlan:
    """The layer sizes of one SubNet (what actuation swaps in; what extraction builds)."""
    space = spec.subnet_space
    stem_mid, stem_out, stage_widths = resnet_widths(spec)
    block_args, depths, g = [], [], 0
    for s, n in enumerate(space.blocks_per_stage):
        depth = space.base_depths[s] + choice.d[s + 1]
        out = stage_widths[s][choice.w[s + 2]]
        block_args.append(tuple((make_divisible(round(out * choice.e[g + i])), out, row) for i in range(depth)))
        depths.append(depth)
        g += n
    return ResNetPlan(
        subnet_id=choice.id, resolution=choice.r, stem_mid=stem_mid[choice.w[0]],
        stem_residual=choice.d[0] == max(space.depth_choices), stem_out=stem_out[choice.w[1]],
        depths=tuple(depths), block_args=tuple(block_args), norm_row=row)


class OFABottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 with OFA's shortcut: identity, or average pool (stride)
    then a 1x1 conv and a norm when the block changes width or resolution."""

    def __init__(self, max_in: int, max_mid: int, max_out: int, stride: int, project: bool) -> None:
        super().__init__()
        self.conv1, self.bn1 = SlicedConv2d(max_in, max_mid, 1), SubnetNorm(max_mid)
        self.conv2, self.bn2 = SlicedConv2d(max_mid, max_mid, 3, stride), SubnetNorm(max_mid)
        self.conv3, self.bn3 = SlicedConv2d(max_mid, max_out, 1), SubnetNorm(max_out)
        self.stride, self.project = stride, project
        if project:
            self.down_conv, self.down_bn = SlicedConv2d(max_in, max_out, 1), SubnetNorm(max_out)

    def forward(self, x: torch.Tensor, mid: int, out: int, row: int) -> torch.Tensor:
        if self.project:
            pooled = F.avg_pool2d(x, self.stride, self.stride, 0, ceil_mode=True) if self.stride > 1 else x
            shortcut = self.down_bn(self.down_conv(pooled, out), row)
        else:
            shortcut = x
        h = F.relu(self.bn1(self.conv1(x, mid), row))
        h = F.relu(self.bn2(self.conv2(h, mid), row))
        return F.relu(self.bn3(self.conv3(h, out), row) + shortcut)


class OFAResNet50(OFASuperNet):
    def __init__(self, spec: OFASpec) -> None:
        super().__init__(spec)
        space = self.space
        stem_mid, stem_out, stage_widths = resnet_widths(spec)
        self.stem0_conv, self.stem0_bn = SlicedConv2d(3, max(stem_mid), 3, 2), SubnetNorm(max(stem_mid))
        self.stem1_conv, self.stem1_bn = SlicedConv2d(max(stem_mid), max(stem_mid), 3), SubnetNorm(max(stem_mid))
        self.stem2_conv, self.stem2_bn = SlicedConv2d(max(stem_mid), max(stem_out), 3), SubnetNorm(max(stem_out))
        stages, widths_in = [], stem_out
        for s, (widths, n) in enumerate(zip(stage_widths, space.blocks_per_stage)):
            max_mid = make_divisible(round(max(widths) * max(space.expand_choices)))
            blocks = []
            for i in range(n):
                stride = STAGE_STRIDES[s] if i == 0 else 1
                project = not (stride == 1 and widths_in == widths)
                blocks.append(OFABottleneck(max(widths_in), max_mid, max(widths), stride, project))
                widths_in = widths
            stages.append(LayerSelect(blocks))
        self.stages = nn.ModuleList(stages)
        self.classifier = SlicedLinear(max(stage_widths[-1]), spec.num_classes)
        self._active = self.plan(space.largest())

    def build_plan(self, choice: ResNetChoice, row: int) -> ResNetPlan:
        return resnet_plan(self.spec, choice, row)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_calibrated()
        p = self._active
        x = self._resize(x)
        row = p.norm_row
        x = F.relu(self.stem0_bn(self.stem0_conv(x, p.stem_mid), row))
        if p.stem_residual:
            x = x + F.relu(self.stem1_bn(self.stem1_conv(x, p.stem_mid), row))
        x = F.relu(self.stem2_bn(self.stem2_conv(x, p.stem_out), row))
        x = F.max_pool2d(x, 3, 2, 1)
        for stage, depth, args in zip(self.stages, p.depths, p.block_args):
            x = stage(x, depth, args)
        return self.classifier(x.mean((2, 3)))

    def ofa_names(self) -> dict[str, str]:
        names = {"classifier.weight": "classifier.linear.linear.weight",
                 "classifier.bias": "classifier.linear.linear.bias"}
        for k, ofa in ((0, "input_stem.0"), (1, "input_stem.1.conv"), (2, "input_stem.2")):
            names[f"stem{k}_conv.weight"] = f"{ofa}.conv.conv.weight"
            names[f"stem{k}_bn.weight"] = f"{ofa}.bn.bn.weight"
            names[f"stem{k}_bn.bias"] = f"{ofa}.bn.bn.bias"
        g = 0
        for s, stage in enumerate(self.stages):
            for i, block in enumerate(stage.blocks):
                ours, ofa = f"stages.{s}.blocks.{i}", f"blocks.{g}"
                pairs = [("conv1", "bn1", "conv1"), ("conv2", "bn2", "conv2"), ("conv3", "bn3", "conv3")]
                if block.project:
                    pairs.append(("down_conv", "down_bn", "downsample"))
                for conv, bn, where in pairs:
                    names[f"{ours}.{conv}.weight"] = f"{ofa}.{where}.conv.conv.weight"
                    names[f"{ours}.{bn}.weight"] = f"{ofa}.{where}.bn.bn.weight"
                    names[f"{ours}.{bn}.bias"] = f"{ofa}.{where}.bn.bn.bias"
                g += 1
        return names

    def subnet_cost(self, choice: ResNetChoice) -> tuple[int, int]:
        p = self.plan(choice)
        size, macs, params = choice.r, 0, 0

        def conv(cin: int, cout: int, k: int, stride: int) -> None:
            nonlocal size, macs, params
            size = (size + 2 * (k // 2) - k) // stride + 1
            macs += cin * cout * k * k * size * size
            params += cin * cout * k * k + 2 * cout

        conv(3, p.stem_mid, 3, 2)
        if p.stem_residual:
            conv(p.stem_mid, p.stem_mid, 3, 1)
        conv(p.stem_mid, p.stem_out, 3, 1)
        size = (size + 2 - 3) // 2 + 1
        cin = p.stem_out
        for s, (stage, args) in enumerate(zip(self.stages, p.block_args)):
            for block, (mid, out, _) in zip(stage.blocks, args):
                conv(cin, mid, 1, 1)
                conv(mid, mid, 3, block.stride)
                conv(mid, out, 1, 1)
                if block.project:
                    macs += cin * out * size * size
                    params += cin * out + 2 * out
                cin = out
        macs += cin * self.spec.num_classes
        params += cin * self.spec.num_classes + self.spec.num_classes
        return macs, params
