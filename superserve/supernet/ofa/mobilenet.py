"""OFA MobileNetV3 (``ofa_mbv3_d234_e346_k357_w1.0`` / ``w1.2``) as a SubNetAct SuperNet.

As in OFA's ``OFAMobileNetV3``: a 3x3/2 stem conv with h-swish, one fixed depthwise block,
five elastic stages of inverted-residual blocks (LayerSelect over 2-4 blocks; WeightSlice of
the expanded width, ``expand ratio x input width`` rounded to a multiple of 8; an elastic
depthwise kernel of 3, 5 or 7; squeeze-excite in stages 2, 4 and 5; ReLU in the first
stages, h-swish after), then a 1x1 expand with h-swish, global pooling, a 1x1 feature mix
with h-swish and the classifier.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import LayerSelect, SlicedConv2d, SlicedLinear, SubnetNorm
from .base import OFASpec, OFASuperNet
from .ops import ElasticDepthwiseConv, SlicedSqueezeExcite
from .space import MobileChoice, make_divisible

BASE_WIDTHS = (16, 16, 24, 40, 80, 112, 160, 960, 1280)
STAGE_STRIDES = (2, 2, 2, 1, 2)  # the five elastic stages (the fixed first block has stride 1)
STAGE_HSWISH = (False, False, True, True, True)
STAGE_SE = (False, True, False, True, True)
SE_REDUCTION = 4


def _act(x: torch.Tensor, hswish: bool) -> torch.Tensor:
    return F.hardswish(x) if hswish else F.relu(x)


@dataclass(frozen=True)
class MobilePlan:
    subnet_id: str
    resolution: int
    depths: tuple[int, ...]
    block_args: tuple[tuple[tuple[int, int, int, int], ...], ...]  # per stage, per active block: (mid, k, se, row)
    norm_row: int


def mobile_widths(spec: OFASpec) -> list[int]:
    """Stem, first block, the five stages, final expand and feature mix widths."""
    return [make_divisible(b * spec.width_mult) for b in BASE_WIDTHS]


def mobile_plan(spec: OFASpec, choice: MobileChoice, row: int) -> MobilePlan:
    """The layer sizes of one SubNet (what actuation swaps in; what extraction builds)."""
    space, widths = spec.subnet_space, mobile_widths(spec)
    dmax, block_args = max(space.depth_choices), []
    for s in range(space.num_stages):
        args = []
        for i in range(choice.d[s]):
            g, cin = s * dmax + i, widths[s + 1] if i == 0 else widths[s + 2]
            mid = make_divisible(round(cin * choice.e[g]))
            args.append((mid, choice.ks[g], make_divisible(mid // SE_REDUCTION) if STAGE_SE[s] else 0, row))
        block_args.append(tuple(args))
    return MobilePlan(choice.id, choice.r, tuple(choice.d), tuple(block_args), row)


class FirstBlock(nn.Module):
    """The fixed block after the stem: depthwise 3x3 + ReLU, 1x1 projection, residual."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.dw, self.bn1 = ElasticDepthwiseConv(cin, (3,)), SubnetNorm(cin)
        self.pw, self.bn2 = SlicedConv2d(cin, cout, 1), SubnetNorm(cout)
        self.residual = cin == cout

    def forward(self, x: torch.Tensor, row: int) -> torch.Tensor:
        h = F.relu(self.bn1(self.dw(x, 3), row))
        h = self.bn2(self.pw(h, self.pw.max_out), row)
        return h + x if self.residual else h


class MobileBlock(nn.Module):
    """Inverted residual: 1x1 expand -> elastic depthwise -> [squeeze-excite] -> 1x1 project."""

    def __init__(self, cin: int, cout: int, max_mid: int, kernels: tuple[int, ...], stride: int,
                 hswish: bool, se: bool) -> None:
        super().__init__()
        self.conv1, self.bn1 = SlicedConv2d(cin, max_mid, 1), SubnetNorm(max_mid)
        self.dw, self.bn2 = ElasticDepthwiseConv(max_mid, kernels, stride), SubnetNorm(max_mid)
        self.se = SlicedSqueezeExcite(max_mid, make_divisible(max_mid // SE_REDUCTION)) if se else None
        self.conv3, self.bn3 = SlicedConv2d(max_mid, cout, 1), SubnetNorm(cout)
        self.hswish, self.cout = hswish, cout
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor, mid: int, kernel: int, se_hidden: int, row: int) -> torch.Tensor:
        h = _act(self.bn1(self.conv1(x, mid), row), self.hswish)
        h = _act(self.bn2(self.dw(h, kernel), row), self.hswish)
        if self.se is not None:
            h = self.se(h, se_hidden)
        h = self.bn3(self.conv3(h, self.cout), row)
        return h + x if self.residual else h


class OFAMobileNetV3(OFASuperNet):
    def __init__(self, spec: OFASpec) -> None:
        super().__init__(spec)
        space = self.space
        widths = mobile_widths(spec)
        self.first_conv, self.first_bn = SlicedConv2d(3, widths[0], 3, 2), SubnetNorm(widths[0])
        self.first_block = FirstBlock(widths[0], widths[1])
        stages, cin = [], widths[1]
        for s in range(space.num_stages):
            cout, blocks = widths[s + 2], []
            for i in range(max(space.depth_choices)):
                max_mid = make_divisible(round(cin * max(space.expand_choices)))
                blocks.append(MobileBlock(cin, cout, max_mid, space.kernel_choices,
                                          STAGE_STRIDES[s] if i == 0 else 1, STAGE_HSWISH[s], STAGE_SE[s]))
                cin = cout
            stages.append(LayerSelect(blocks))
        self.stages = nn.ModuleList(stages)
        self.final_conv, self.final_bn = SlicedConv2d(cin, widths[7], 1), SubnetNorm(widths[7])
        self.mix_conv = SlicedConv2d(widths[7], widths[8], 1)
        self.classifier = SlicedLinear(widths[8], spec.num_classes)
        self._active = self.plan(space.largest())

    def build_plan(self, choice: MobileChoice, row: int) -> MobilePlan:
        return mobile_plan(self.spec, choice, row)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_calibrated()
        p = self._active
        row = p.norm_row
        x = self._resize(x)
        x = F.hardswish(self.first_bn(self.first_conv(x, self.first_conv.max_out), row))
        x = self.first_block(x, row)
        for stage, depth, args in zip(self.stages, p.depths, p.block_args):
            x = stage(x, depth, args)
        x = F.hardswish(self.final_bn(self.final_conv(x, self.final_conv.max_out), row))
        x = F.hardswish(self.mix_conv(x.mean((2, 3), keepdim=True), self.mix_conv.max_out))
        return self.classifier(torch.flatten(x, 1))

    def ofa_names(self) -> dict[str, str]:
        """Own key -> OFA's key (current spelling; the fixed layers are plain modules there)."""
        names = {"first_conv.weight": "first_conv.conv.weight", "first_bn.weight": "first_conv.bn.weight",
                 "first_bn.bias": "first_conv.bn.bias",
                 "first_block.dw.weight": "blocks.0.conv.depth_conv.conv.weight",
                 "first_block.bn1.weight": "blocks.0.conv.depth_conv.bn.weight",
                 "first_block.bn1.bias": "blocks.0.conv.depth_conv.bn.bias",
                 "first_block.pw.weight": "blocks.0.conv.point_linear.conv.weight",
                 "first_block.bn2.weight": "blocks.0.conv.point_linear.bn.weight",
                 "first_block.bn2.bias": "blocks.0.conv.point_linear.bn.bias",
                 "final_conv.weight": "final_expand_layer.conv.weight",
                 "final_bn.weight": "final_expand_layer.bn.weight", "final_bn.bias": "final_expand_layer.bn.bias",
                 "mix_conv.weight": "feature_mix_layer.conv.weight",
                 "classifier.weight": "classifier.linear.weight", "classifier.bias": "classifier.linear.bias"}
        g = 1
        for s, stage in enumerate(self.stages):
            for i, block in enumerate(stage.blocks):
                ours, ofa = f"stages.{s}.blocks.{i}", f"blocks.{g}.conv"
                for mine, theirs in (("conv1", "inverted_bottleneck.conv.conv"), ("bn1", "inverted_bottleneck.bn.bn"),
                                     ("conv3", "point_linear.conv.conv"), ("bn3", "point_linear.bn.bn"),
                                     ("bn2", "depth_conv.bn.bn")):
                    for p in ("weight",) if mine.startswith("conv") else ("weight", "bias"):
                        names[f"{ours}.{mine}.{p}"] = f"{ofa}.{theirs}.{p}"
                names[f"{ours}.dw.weight"] = f"{ofa}.depth_conv.conv.conv.weight"
                for t in block.dw.transforms:
                    names[f"{ours}.dw.transforms.{t}"] = f"{ofa}.depth_conv.conv.{t}"
                if block.se is not None:
                    for part in ("reduce", "expand"):
                        for p in ("weight", "bias"):
                            names[f"{ours}.se.{part}_{p}"] = f"{ofa}.depth_conv.se.fc.{part}.{p}"
                g += 1
        return names

    def subnet_cost(self, choice: MobileChoice) -> tuple[int, int]:
        p = self.plan(choice)
        size, macs, params = choice.r, 0, 0

        def conv(cin: int, cout: int, k: int, stride: int, groups: int = 1, norm: bool = True) -> None:
            nonlocal size, macs, params
            size = (size + 2 * (k // 2) - k) // stride + 1
            macs += cin // groups * cout * k * k * size * size
            params += cin // groups * cout * k * k + (2 * cout if norm else 0)

        first = self.first_conv.max_out
        conv(3, first, 3, 2)
        conv(first, first, 3, 1, groups=first)
        conv(first, self.first_block.pw.max_out, 1, 1)
        for stage, args in zip(self.stages, p.block_args):
            for block, (mid, k, se, _) in zip(stage.blocks, args):
                conv(block.conv1.max_in, mid, 1, 1)
                conv(mid, mid, k, block.dw.stride, groups=mid)
                if se:
                    macs += 2 * mid * se
                    params += 2 * mid * se + mid + se
                conv(mid, block.cout, 1, 1)
        conv(self.final_conv.max_in, self.final_conv.max_out, 1, 1)
        size = 1
        conv(self.mix_conv.max_in, self.mix_conv.max_out, 1, 1, norm=False)
        macs += self.mix_conv.max_out * self.spec.num_classes
        params += self.mix_conv.max_out * self.spec.num_classes + self.spec.num_classes
        return macs, params
