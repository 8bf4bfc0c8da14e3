"""Extraction for the OFA families: one SubNet as a standalone plain-PyTorch model (nn.Conv2d,
nn.BatchNorm2d with that SubNet's SubnetNorm statistics, the elastic kernel already
transformed). It is what a one-model-per-version server (the paper's Clipper+) loads, and
the baseline of the memory comparison."""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from ..checkpoint import load_into, read_safetensors
from ..ops import SlicedConv2d, SubnetNorm
from ..resnet import UNCALIBRATED
from .base import OFASpec, OFASuperNet
from .mobilenet import MobilePlan, activate, mobile_arch, mobile_plan, mobile_widths
from .resnet import STAGE_STRIDES as RN_STRIDES, ResNetPlan, resnet_plan

EXTRACTED_FORMAT = "superserve-ofa-extracted/1"


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, eps: float = 1e-5) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout, eps=eps))


class PlainBottleneck(nn.Module):
    def __init__(self, cin: int, mid: int, out: int, stride: int, project: bool) -> None:
        super().__init__()
        self.conv1, self.conv2, self.conv3 = _conv_bn(cin, mid, 1), _conv_bn(mid, mid, 3, stride), _conv_bn(mid, out, 1)
        self.stride = stride
        self.down = _conv_bn(cin, out, 1) if project else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.down is not None:
            shortcut = self.down(F.avg_pool2d(x, self.stride, self.stride, 0, ceil_mode=True) if self.stride > 1 else x)
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        return F.relu(self.conv3(h) + shortcut)


class PlainOFAResNet(nn.Module):
    def __init__(self, spec: OFASpec, plan: ResNetPlan, projects: list[list[bool]]) -> None:
        super().__init__()
        self.resolution = plan.resolution
        self.stem0 = _conv_bn(3, plan.stem_mid, 3, 2)
        self.stem1 = _conv_bn(plan.stem_mid, plan.stem_mid, 3) if plan.stem_residual else None
        self.stem2 = _conv_bn(plan.stem_mid, plan.stem_out, 3)
        blocks, cin = [], plan.stem_out
        for s, args in enumerate(plan.block_args):
            for i, (mid, out, _) in enumerate(args):
                blocks.append(PlainBottleneck(cin, mid, out, RN_STRIDES[s] if i == 0 else 1, projects[s][i]))
                cin = out
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Linear(cin, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem0(x))
        if self.stem1 is not None:
            x = x + F.relu(self.stem1(x))
        x = F.max_pool2d(F.relu(self.stem2(x)), 3, 2, 1)
        return self.classifier(self.blocks(x).mean((2, 3)))


class PlainSqueezeExcite(nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(channels, hidden, 1), nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.reduce(x.mean((2, 3), keepdim=True)))
        return x * F.hardsigmoid(self.expand(y))


class PlainMobileBlock(nn.Module):
    def __init__(self, cin: int, mid: int, out: int, k: int, stride: int, act: str, se: int, eps: float) -> None:
        super().__init__()
        self.conv1 = _conv_bn(cin, mid, 1, eps=eps)
        self.dw = _conv_bn(mid, mid, k, stride, groups=mid, eps=eps)
        self.se = PlainSqueezeExcite(mid, se) if se else None
        self.conv3 = _conv_bn(mid, out, 1, eps=eps)
        self.act = act
        self.residual = stride == 1 and cin == out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = activate(self.dw(activate(self.conv1(x), self.act)), self.act)
        if self.se is not None:
            h = self.se(h)
        h = self.conv3(h)
        return h + x if self.residual else h


class PlainOFAMobileNet(nn.Module):
    def __init__(self, spec: OFASpec, plan: MobilePlan) -> None:
        super().__init__()
        self.resolution = plan.resolution
        arch, w = mobile_arch(spec), mobile_widths(spec)
        self.arch = arch
        self.first = _conv_bn(3, w[0], 3, 2, eps=arch.eps)
        self.first_dw = _conv_bn(w[0], w[0], 3, groups=w[0], eps=arch.eps)
        self.first_pw = _conv_bn(w[0], w[1], 1, eps=arch.eps)
        blocks, cin = [], w[1]
        for s, args in enumerate(plan.block_args):
            for i, (mid, k, se, _) in enumerate(args):
                blocks.append(PlainMobileBlock(cin, mid, w[s + 2], k, arch.strides[s] if i == 0 else 1,
                                               arch.acts[s], se, arch.eps))
                cin = w[s + 2]
        self.blocks = nn.Sequential(*blocks)
        self.final = _conv_bn(cin, w[-2], 1, eps=arch.eps) if arch.final_expand else None
        if arch.final_expand:
            self.mix = nn.Conv2d(w[-2], w[-1], 1, bias=False)
        else:
            self.mix = _conv_bn(cin, w[-1], 1, eps=arch.eps)
        self.classifier = nn.Linear(w[-1], spec.num_classes)
        self.first_residual = w[0] == w[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = activate(self.first(x), self.arch.stem_act)
        h = self.first_pw(activate(self.first_dw(x), self.arch.first_act))
        x = self.blocks(h + x if self.first_residual else h)
        if self.final is not None:
            x = F.hardswish(self.mix(F.hardswish(self.final(x)).mean((2, 3), keepdim=True)))
        else:
            x = F.relu6(self.mix(x)).mean((2, 3), keepdim=True)
        return self.classifier(torch.flatten(x, 1))


def _copy_conv(dst: nn.Conv2d, weight: torch.Tensor) -> None:
    dst.weight.copy_(weight[: dst.out_channels, : dst.in_channels // dst.groups])


def _copy_norm(dst: nn.BatchNorm2d, src: SubnetNorm, row: int) -> None:
    c, off = dst.num_features, src._offsets[row]
    dst.weight.copy_(src.weight[:c])
    dst.bias.copy_(src.bias[:c])
    dst.running_mean.copy_(src.stats[0, off:off + c])
    dst.running_var.copy_(src.stats[1, off:off + c])
    dst.eps = src.eps


def _copy(dst: nn.Sequential, conv: SlicedConv2d | torch.Tensor, norm: SubnetNorm, row: int) -> None:
    _copy_conv(dst[0], conv.weight if isinstance(conv, SlicedConv2d) else conv)
    _copy_norm(dst[1], norm, row)


def _extract_resnet(model: OFASuperNet, plan: ResNetPlan) -> PlainOFAResNet:
    projects = [[b.project for b in stage.blocks] for stage in model.stages]
    out = PlainOFAResNet(model.spec, plan, projects)
    row = plan.norm_row
    _copy(out.stem0, model.stem0_conv, model.stem0_bn, row)
    if out.stem1 is not None:
        _copy(out.stem1, model.stem1_conv, model.stem1_bn, row)
    _copy(out.stem2, model.stem2_conv, model.stem2_bn, row)
    dst = iter(out.blocks)
    for stage, depth in zip(model.stages, plan.depths):
        for src in list(stage.blocks)[:depth]:
            d = next(dst)
            for name in ("1", "2", "3"):
                _copy(getattr(d, f"conv{name}"), getattr(src, f"conv{name}"), getattr(src, f"bn{name}"), row)
            if d.down is not None:
                _copy(d.down, src.down_conv, src.down_bn, row)
    out.classifier.weight.copy_(model.classifier.weight[:, : out.classifier.in_features])
    out.classifier.bias.copy_(model.classifier.bias)
    return out


def _extract_mobile(model: OFASuperNet, plan: MobilePlan) -> PlainOFAMobileNet:
    out = PlainOFAMobileNet(model.spec, plan)
    row = plan.norm_row
    _copy(out.first, model.first_conv, model.first_bn, row)
    _copy(out.first_dw, model.first_block.dw.weight, model.first_block.bn1, row)
    _copy(out.first_pw, model.first_block.pw, model.first_block.bn2, row)
    dst = iter(out.blocks)
    for stage, args in zip(model.stages, plan.block_args):
        for src, (_, k, se, _) in zip(stage.blocks, args):
            d = next(dst)
            _copy(d.conv1, src.conv1, src.bn1, row)
            _copy(d.dw, src.dw.kernel(k), src.bn2, row)
            if d.se is not None:
                mid = d.se.reduce.in_channels
                d.se.reduce.weight.copy_(src.se.reduce_weight[:se, :mid])
                d.se.reduce.bias.copy_(src.se.reduce_bias[:se])
                d.se.expand.weight.copy_(src.se.expand_weight[:mid, :se])
                d.se.expand.bias.copy_(src.se.expand_bias[:mid])
            _copy(d.conv3, src.conv3, src.bn3, row)
    if out.final is not None:
        _copy(out.final, model.final_conv, model.final_bn, row)
        _copy_conv(out.mix, model.mix_conv.weight)
    else:
        _copy(out.mix, model.mix_conv, model.mix_bn, row)
    out.classifier.weight.copy_(model.classifier.weight)
    out.classifier.bias.copy_(model.classifier.bias)
    return out


@torch.no_grad()
def extract_ofa(model: OFASuperNet, subnet_id: str) -> nn.Module:
    """Copy one calibrated SubNet out of the SuperNet (eval mode). The result expects inputs
    at the SubNet's own resolution (``.resolution``)."""
    plan = model.plan(model.config_from_id(subnet_id))
    if plan.norm_row == UNCALIBRATED:
        raise ValueError(f"SubNet {subnet_id} is not calibrated; calibrate it before extracting")
    out = _extract_resnet(model, plan) if isinstance(plan, ResNetPlan) else _extract_mobile(model, plan)
    return out.eval()


def save_extracted_ofa(model: OFASuperNet, subnet_id: str, path: str | Path) -> None:
    plain = extract_ofa(model, subnet_id)
    meta = {"format": EXTRACTED_FORMAT, "spec": json.dumps(model.spec.to_dict()), "subnet": subnet_id}
    save_file({k: v.contiguous() for k, v in plain.state_dict().items()}, str(path), metadata=meta)


def load_extracted_ofa(path: str | Path) -> nn.Module:
    """Load a standalone SubNet saved by ``save_extracted_ofa`` (safetensors; no SuperNet built)."""
    tensors, meta = read_safetensors(path, EXTRACTED_FORMAT)
    spec = OFASpec.from_dict(json.loads(meta["spec"]))
    choice = spec.subnet_space.from_id(meta["subnet"])
    if spec.arch == "resnet50":
        plan = resnet_plan(spec, choice, 0)
        model: nn.Module = PlainOFAResNet(spec, plan, _resnet_projects(spec))
    else:
        model = PlainOFAMobileNet(spec, mobile_plan(spec, choice, 0))
    load_into(model, tensors, path)
    return model.eval()


def _resnet_projects(spec: OFASpec) -> list[list[bool]]:
    """Which blocks of each stage carry a projection shortcut (the first of every stage: each
    changes width, and all but the first change resolution)."""
    return [[i == 0 for i in range(n)] for n in spec.subnet_space.blocks_per_stage]
