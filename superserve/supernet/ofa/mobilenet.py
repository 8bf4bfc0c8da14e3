"""OFA's MobileNet-like SuperNets as SubNetAct SuperNets: MobileNetV3
(``ofa_mbv3_d234_e346_k357_w1.0`` / ``w1.2``) and ProxylessNAS (``ofa_proxyless_d234_e346_k357_w1.3``).

As in OFA's ``OFAMobileNetV3`` / ``OFAProxylessNASNets``: a 3x3/2 stem conv, one fixed
depthwise block, elastic stages of inverted-residual blocks (LayerSelect over 2-4 blocks;
WeightSlice of the expanded width, ``expand ratio x input width`` rounded to a multiple of 8;
an elastic depthwise kernel of 3, 5 or 7; squeeze-excite where the family has it), then the
head. MobileNetV3: ReLU in the first stages and h-swish after, a 1x1 expand with h-swish,
global pooling, a 1x1 feature mix with h-swish (no norm). ProxylessNAS: ReLU6 throughout, a
1x1 feature mix with norm and ReLU6, then pooling; its last stage is one fixed block.
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

SE_REDUCTION = 4


@dataclass(frozen=True)
class MobileArch:
    """What tells OFA's MobileNet-like families apart."""

    base_widths: tuple[int, ...]  # stem, first block, each elastic stage, [final expand], feature mix
    strides: tuple[int, ...]  # per elastic stage (the fixed first block has stride 1)
    acts: tuple[str, ...]  # per elastic stage: relu | relu6 | hswish
    se: tuple[bool, ...]  # per elastic stage
    stem_act: str
    first_act: str
    final_expand: bool  # MobileNetV3's head (expand, pool, mix without norm); else ProxylessNAS's
    eps: float  # BatchNorm epsilon of the family


MBV3 = MobileArch((16, 16, 24, 40, 80, 112, 160, 960, 1280), (2, 2, 2, 1, 2),
                  ("relu", "relu", "hswish", "hswish", "hswish"), (False, True, False, True, True),
                  "hswish", "relu", True, 1e-5)
PROXYLESS = MobileArch((32, 16, 24, 40, 80, 96, 192, 320, 1280), (2, 2, 2, 1, 2, 1), ("relu6",) * 6,
                       (False,) * 6, "relu6", "relu6", False, 1e-3)


def mobile_arch(spec: OFASpec) -> MobileArch:
    return PROXYLESS if spec.arch.startswith("proxyless") else MBV3


def activate(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "hswish":
        return F.hardswish(x)
    return F.relu6(x) if kind == "relu6" else F.relu(x)


@dataclass(frozen=True)
class MobilePlan:
    subnet_id: str
    resolution: int
    depths: tuple[int, ...]
    block_args: tuple[tuple[tuple[int, int, int, int], ...], ...]  # per stage, per active block: (mid, k, se, row)
    norm_row: int


def mobile_widths(spec: OFASpec) -> list[int]:
    """Stem, first block, each stage, [final expand] and feature mix widths."""
    return [make_divisible(b * spec.width_mult) for b in mobile_arch(spec).base_widths]


def mobile_plan(spec: OFASpec, choice: MobileChoice, row: int) -> MobilePlan:
    """The layer sizes of one SubNet (what actuation swaps in; what extraction builds)."""
    space, widths, arch = spec.subnet_space, mobile_widths(spec), mobile_arch(spec)
    block_args, depths, g = [], [], 0
    for s, n in enumerate(space.stage_blocks):
        args = []
        depths.append(min(choice.d[s], n))
        for i in range(depths[-1]):
            cin = widths[s + 1] if i == 0 else widths[s + 2]
            mid = make_divisible(round(cin * choice.e[g + i]))
            args.append((mid, choice.ks[g + i], make_divisible(mid // SE_REDUCTION) if arch.se[s] else 0, row))
        block_args.append(tuple(args))
        g += n
    return MobilePlan(choice.id, choice.r, tuple(depths), tuple(block_args), row)


class FirstBlock(nn.Module):
    """The fixed block after the stem: depthwise 3x3, 1x1 projection, residual if widths match."""

    def __init__(self, cin: int, cout: int, act: str, eps: float) -> None:
        super().__init__()
        self.dw, self.bn1 = ElasticDepthwiseConv(cin, (3,)), SubnetNorm(cin, eps)
        self.pw, self.bn2 = SlicedConv2d(cin, cout, 1), SubnetNorm(cout, eps)
        self.residual, self.act = cin == cout, act

    def forward(self, x: torch.Tensor, row: int) -> torch.Tensor:
        h = activate(self.bn1(self.dw(x, 3), row), self.act)
        h = self.bn2(self.pw(h, self.pw.max_out), row)
        return h + x if self.residual else h


class MobileBlock(nn.Module):
    """Inverted residual: 1x1 expand -> elastic depthwise -> [squeeze-excite] -> 1x1 project."""

    def __init__(self, cin: int, cout: int, max_mid: int, kernels: tuple[int, ...], stride: int,
                 act: str, se: bool, eps: float) -> None:
        super().__init__()
        self.conv1, self.bn1 = SlicedConv2d(cin, max_mid, 1), SubnetNorm(max_mid, eps)
        self.dw, self.bn2 = ElasticDepthwiseConv(max_mid, kernels, stride), SubnetNorm(max_mid, eps)
        self.se = SlicedSqueezeExcite(max_mid, make_divisible(max_mid // SE_REDUCTION)) if se else None
        self.conv3, self.bn3 = SlicedConv2d(max_mid, cout, 1), SubnetNorm(cout, eps)
        self.act, self.cout = act, cout
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor, mid: int, kernel: int, se_hidden: int, row: int) -> torch.Tensor:
        h = activate(self.bn1(self.conv1(x, mid), row), self.act)
        h = activate(self.bn2(self.dw(h, kernel), row), self.act)
        if self.se is not None:
            h = self.se(h, se_hidden)
        h = self.bn3(self.conv3(h, self.cout), row)
        return h + x if self.residual else h


class OFAMobileNet(OFASuperNet):
    def __init__(self, spec: OFASpec) -> None:
        super().__init__(spec)
        space, arch = self.space, mobile_arch(spec)
        self.arch = arch
        widths = mobile_widths(spec)
        self.first_conv, self.first_bn = SlicedConv2d(3, widths[0], 3, 2), SubnetNorm(widths[0], arch.eps)
        self.first_block = FirstBlock(widths[0], widths[1], arch.first_act, arch.eps)
        stages, cin = [], widths[1]
        for s, n in enumerate(space.stage_blocks):
            cout, blocks = widths[s + 2], []
            for i in range(n):
                max_mid = make_divisible(round(cin * max(space.expand_choices)))
                blocks.append(MobileBlock(cin, cout, max_mid, space.kernel_choices, arch.strides[s] if i == 0 else 1,
                                          arch.acts[s], arch.se[s], arch.eps))
                cin = cout
            stages.append(LayerSelect(blocks))
        self.stages = nn.ModuleList(stages)
        if arch.final_expand:
            self.final_conv, self.final_bn = SlicedConv2d(cin, widths[-2], 1), SubnetNorm(widths[-2], arch.eps)
            cin = widths[-2]
        self.mix_conv = SlicedConv2d(cin, widths[-1], 1)
        self.mix_bn = None if arch.final_expand else SubnetNorm(widths[-1], arch.eps)
        self.classifier = SlicedLinear(widths[-1], spec.num_classes)
        self._active = self.plan(space.largest())

    def build_plan(self, choice: MobileChoice, row: int) -> MobilePlan:
        return mobile_plan(self.spec, choice, row)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_calibrated()
        p = self._active
        row = p.norm_row
        x = self._resize(x)
        x = activate(self.first_bn(self.first_conv(x, self.first_conv.max_out), row), self.arch.stem_act)
        x = self.first_block(x, row)
        for stage, depth, args in zip(self.stages, p.depths, p.block_args):
            x = stage(x, depth, args)
        if self.mix_bn is None:  # MobileNetV3: expand, pool, mix
            x = F.hardswish(self.final_bn(self.final_conv(x, self.final_conv.max_out), row))
            x = F.hardswish(self.mix_conv(x.mean((2, 3), keepdim=True), self.mix_conv.max_out))
        else:  # ProxylessNAS: mix, pool
            x = F.relu6(self.mix_bn(self.mix_conv(x, self.mix_conv.max_out), row)).mean((2, 3), keepdim=True)
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
                 "mix_conv.weight": "feature_mix_layer.conv.weight",
                 "classifier.weight": "classifier.linear.weight", "classifier.bias": "classifier.linear.bias"}
        if self.mix_bn is None:
            names.update({"final_conv.weight": "final_expand_layer.conv.weight",
                          "final_bn.weight": "final_expand_layer.bn.weight",
                          "final_bn.bias": "final_expand_layer.bn.bias"})
        else:
            names.update({"mix_bn.weight": "feature_mix_layer.bn.weight", "mix_bn.bias": "feature_mix_layer.bn.bias"})
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
        if self.mix_bn is None:
            conv(self.final_conv.max_in, self.final_conv.max_out, 1, 1)
            size = 1
        conv(self.mix_conv.max_in, self.mix_conv.max_out, 1, 1, norm=self.mix_bn is not None)
        macs += self.mix_conv.max_out * self.spec.num_classes
        params += self.mix_conv.max_out * self.spec.num_classes + self.spec.num_classes
        return macs, params
