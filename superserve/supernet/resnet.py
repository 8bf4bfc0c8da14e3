"""An OFA-ResNet-style SuperNet built from the SubNetAct operators.

`SuperResNet.actuate(config)` only swaps a precomputed, immutable `ActivePlan` (plain ints):
no tensor is allocated or copied, and the next forward pass runs that SubNet.

Serving forward passes (eval mode, no autograd) run a per-SubNet *program* compiled once, on
the SubNet's first such pass (or ahead of time with `prepare`): a flat tuple of per-layer
weight views (leading-channel slices of the shared max-size kernels), SubnetNorm statistic
and affine views, strides and paddings. Forward is then a tight loop of ATen calls with no
module dispatch, slicing or attribute chains per layer. A program holds views only, never a
copy of a weight: its bytes are the tensor headers (`ProgramCache.program_bytes`); weight and affine views
are shared by the SubNets that slice the same sizes, statistic views are per SubNet. Training-mode passes,
passes with autograd on, and calibration take the modular path through the operators.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import SubNetConfig, SuperNetSpec, active_channels
from .ops import TABLE_EPOCH, LayerSelect, ProgramCache, SlicedConv2d, SlicedLinear, SubnetNorm

UNCALIBRATED = -1  # norm row meaning "no stored statistics" (batch statistics in training)


@dataclass(frozen=True)
class ActivePlan:
    """Everything a forward pass needs to run one SubNet, as plain integers."""

    subnet_id: str
    stem_out: int
    depths: tuple[int, ...]
    block_args: tuple[tuple[tuple[int, int, int], ...], ...]  # per stage, per block: (mid, out, row)
    norm_row: int


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand, with a projection shortcut on the first block of a stage."""

    def __init__(self, max_in: int, max_mid: int, max_out: int, stride: int, project: bool) -> None:
        super().__init__()
        self.conv1, self.bn1 = SlicedConv2d(max_in, max_mid, 1), SubnetNorm(max_mid)
        self.conv2, self.bn2 = SlicedConv2d(max_mid, max_mid, 3, stride), SubnetNorm(max_mid)
        self.conv3, self.bn3 = SlicedConv2d(max_mid, max_out, 1), SubnetNorm(max_out)
        # Zero-init of the last norm's scale makes each block start as identity, which
        # helps the small SubNets (they skip blocks) and the deep ones alike.
        nn.init.zeros_(self.bn3.weight)
        self.project = project
        if project:
            self.down_conv, self.down_bn = SlicedConv2d(max_in, max_out, 1, stride), SubnetNorm(max_out)

    def forward(self, x: torch.Tensor, mid: int, out: int, row: int) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x, mid), row))
        h = F.relu(self.bn2(self.conv2(h, mid), row))
        h = self.bn3(self.conv3(h, out), row)
        shortcut = self.down_bn(self.down_conv(x, out), row) if self.project else x
        return F.relu(h + shortcut)


class SuperResNet(ProgramCache):
    def __init__(self, spec: SuperNetSpec) -> None:
        super().__init__()
        self.spec = spec
        self.stem_conv = SlicedConv2d(spec.in_channels, spec.stem_channels, 3, spec.stem_stride)
        self.stem_bn = SubnetNorm(spec.stem_channels)
        stages, max_in = [], spec.stem_channels
        for m, (c, s) in enumerate(zip(spec.stage_channels, spec.stage_strides)):
            blocks = [
                Bottleneck(max_in if i == 0 else c, spec.max_mid(m), c, s if i == 0 else 1, project=i == 0)
                for i in range(spec.max_depth)
            ]
            stages.append(LayerSelect(blocks))
            max_in = c
        self.stages = nn.ModuleList(stages)
        self.classifier = SlicedLinear(spec.stage_channels[-1], spec.num_classes)
        self.norm_rows: dict[str, int] = {}  # SubNet id -> row of every SubnetNorm table
        self._plans: dict[object, ActivePlan] = {}
        self._plans_by_id: dict[str, ActivePlan] = {}  # the serving path actuates by id
        # id(plan) -> (plan, table epoch, program): compiled serving forwards (see module doc)
        self._programs: dict[int, tuple[ActivePlan, int, tuple]] = {}
        self._views: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # shared prefix views
        self._active = self.plan(spec.largest())

    # --- actuation -----------------------------------------------------------------------
    def plan(self, config: SubNetConfig, stats_of: SubNetConfig | None = None) -> ActivePlan:
        """Compute (and cache) the plan of a SubNet. stats_of borrows another SubNet's
        normalisation statistics (used to show what happens without SubnetNorm)."""
        key = config if stats_of is None else (config, stats_of)
        cached = self._plans.get(key)
        if cached is not None:
            return cached
        spec = self.spec
        spec.validate(config)
        row = self.norm_rows.get((stats_of or config).id, UNCALIBRATED)
        block_args = []
        for m, c in enumerate(spec.stage_channels):
            out = active_channels(c, config.width)
            block_args.append(tuple((active_channels(out, e), out, row) for e in config.expands[m]))
        plan = ActivePlan(
            subnet_id=config.id,
            stem_out=active_channels(spec.stem_channels, config.width),
            depths=config.depths,
            block_args=tuple(block_args),
            norm_row=row,
        )
        self._plans[key] = plan
        if stats_of is None:
            self._plans_by_id[plan.subnet_id] = plan
        return plan

    def actuate(self, config: SubNetConfig | str, stats_of: SubNetConfig | None = None) -> ActivePlan:
        """Select the SubNet the next forward pass runs. For served SubNets this is a dict
        lookup and one attribute store."""
        if isinstance(config, str):
            plan = self._plans_by_id.get(config) if stats_of is None else None
            if plan is None:
                plan = self.plan(SubNetConfig.from_id(config), stats_of)
        else:
            plan = self.plan(config, stats_of)
        self._active = plan
        return plan

    @property
    def active(self) -> ActivePlan:
        return self._active

    def config_from_id(self, subnet_id: str) -> SubNetConfig:
        """The control tuple of a SubNet id (each SuperNet family parses its own ids)."""
        return SubNetConfig.from_id(subnet_id)

    def subnet_cost(self, config: SubNetConfig) -> tuple[int, int]:
        """(multiply-accumulates per image, parameters) of one SubNet."""
        return subnet_cost(self.spec, config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self._active
        if not self.training:
            if p.norm_row == UNCALIBRATED:
                raise RuntimeError(
                    f"SubNet {p.subnet_id} has no SubnetNorm statistics; calibrate it first "
                    "(superserve.supernet.calibrate) or actuate a calibrated SubNet")
            if not torch.is_grad_enabled():
                entry = self._programs.get(id(p))
                if entry is None or entry[0] is not p or entry[1] != TABLE_EPOCH[0]:
                    entry = self._compile(p)
                return _run_program(entry[2], x)
        x = F.relu(self.stem_bn(self.stem_conv(x, p.stem_out), p.norm_row))
        if self.spec.stem_pool:
            x = F.max_pool2d(x, 3, 2, 1)
        for stage, depth, args in zip(self.stages, p.depths, p.block_args):
            x = stage(x, depth, args)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    # --- compiled serving programs --------------------------------------------------------
    def prepare(self, subnet_ids: list[str] | None = None) -> int:
        """Compile the serving programs of these SubNets (default: every calibrated one) now
        rather than on their first forward pass. Returns the bytes the programs add."""
        for sid in self.norm_rows if subnet_ids is None else subnet_ids:
            plan = self._plans_by_id.get(sid) or self.plan(SubNetConfig.from_id(sid))
            entry = self._programs.get(id(plan))
            if entry is None or entry[0] is not plan or entry[1] != TABLE_EPOCH[0]:
                self._compile(plan)
        return self.program_bytes()

    def _compile(self, p: ActivePlan) -> tuple[ActivePlan, int, tuple]:
        """Build the program of one calibrated SubNet: views only (no tensor data touched)."""
        row, views = p.norm_row, self._views

        def detach(t: torch.Tensor) -> torch.Tensor:  # one detached base per tensor: views
            key = (id(t), None)                        # of it then carry no extra base each
            hit = views.get(key)
            if hit is None or hit[0] is not t:
                hit = views[key] = (t, t.detach())
            return hit[1]

        def prefix(t: torch.Tensor, *sizes: int) -> torch.Tensor:  # t[:s0, :s1, ...], shared
            key = (id(t), sizes)
            hit = views.get(key)
            if hit is None or hit[0] is not t:
                hit = views[key] = (t, detach(t)[tuple(slice(0, n) for n in sizes)])
            return hit[1]

        with torch.inference_mode(False), torch.no_grad():
            def conv(c: SlicedConv2d, out: int, cin: int) -> torch.Tensor:
                return prefix(c.weight, out, cin)

            def bn(n: SubnetNorm, c: int) -> tuple:
                return n.eval_args(row, c, prefix, detach)

            stem = self.stem_conv
            prog_stem = (conv(stem, p.stem_out, self.spec.in_channels), stem.stride, stem.padding,
                         bn(self.stem_bn, p.stem_out), self.spec.stem_pool)
            blocks, cin = [], p.stem_out
            for stage, depth, args in zip(self.stages, p.depths, p.block_args):
                for i in range(depth):
                    blk = stage.blocks[i]
                    mid, out, _ = args[i]
                    down = ((conv(blk.down_conv, out, cin), blk.down_conv.stride, bn(blk.down_bn, out))
                            if blk.project else None)
                    blocks.append((conv(blk.conv1, mid, cin), bn(blk.bn1, mid),
                                   conv(blk.conv2, mid, mid), (blk.conv2.stride, blk.conv2.padding),
                                   bn(blk.bn2, mid), conv(blk.conv3, out, mid), bn(blk.bn3, out), down))
                    cin = out
            cls = self.classifier
            head = (prefix(cls.weight, cls.weight.shape[0], cin), prefix(cls.bias, cls.bias.shape[0]))
        entry = (p, TABLE_EPOCH[0], (prog_stem, tuple(blocks), head))
        self._programs[id(p)] = entry
        return entry

    # --- SubnetNorm table ----------------------------------------------------------------
    def norm_modules(self) -> list[tuple[str, SubnetNorm]]:
        return [(n, m) for n, m in self.named_modules() if isinstance(m, SubnetNorm)]

    def set_norm_rows(self, subnet_ids: list[str]) -> None:
        """Declare which SubNet each table row belongs to (the tables are filled by
        calibration or loading). Cached plans are rebuilt."""
        self.norm_rows = {sid: r for r, sid in enumerate(subnet_ids)}
        self._plans.clear()
        self._plans_by_id.clear()
        self.drop_programs()
        self._active = self.plan(SubNetConfig.from_id(self._active.subnet_id))

    def weight_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.parameters())

    def norm_table_bytes(self) -> int:
        return sum(m.stats.nbytes + m.offsets.nbytes for _, m in self.norm_modules())


_conv2d, _batch_norm, _relu_, _max_pool2d = torch.conv2d, torch.batch_norm, torch.relu_, torch.max_pool2d


def _run_program(prog: tuple, x: torch.Tensor) -> torch.Tensor:
    """The serving forward of one compiled SubNet: the same ATen operations, in the same
    order, as the modular path (conv, batch norm on the SubNet's statistics, ReLU, ...)."""
    (w, stride, pad, (g, b, m, v, eps), pool), blocks, (fw, fb) = prog
    x = _relu_(_batch_norm(_conv2d(x, w, None, stride, pad), g, b, m, v, False, 0.0, eps, True))
    if pool:
        x = _max_pool2d(x, 3, 2, 1)
    for w1, n1, w2, s2, n2, w3, n3, down in blocks:
        h = _relu_(_batch_norm(_conv2d(x, w1), n1[0], n1[1], n1[2], n1[3], False, 0.0, n1[4], True))
        h = _relu_(_batch_norm(_conv2d(h, w2, None, s2[0], s2[1]), n2[0], n2[1], n2[2], n2[3], False, 0.0, n2[4], True))
        h = _batch_norm(_conv2d(h, w3), n3[0], n3[1], n3[2], n3[3], False, 0.0, n3[4], True)
        if down is not None:
            dw, ds, d = down
            x = _batch_norm(_conv2d(x, dw, None, ds), d[0], d[1], d[2], d[3], False, 0.0, d[4], True)
        x = _relu_(h.add_(x))
    return F.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1), fw, fb)


def subnet_cost(spec: SuperNetSpec, config: SubNetConfig) -> tuple[int, int]:
    """(multiply-accumulates per image, parameters) of one SubNet, counted analytically."""
    size, macs, params = spec.input_size, 0, 0

    def conv(cin: int, cout: int, k: int, stride: int) -> None:
        nonlocal size, macs, params
        size = (size + 2 * (k // 2) - k) // stride + 1
        macs += cin * cout * k * k * size * size
        params += cin * cout * k * k + 2 * cout  # kernel + norm affine

    stem = active_channels(spec.stem_channels, config.width)
    conv(spec.in_channels, stem, 3, spec.stem_stride)
    if spec.stem_pool:
        size = (size + 2 - 3) // 2 + 1
    cin = stem
    for m, c in enumerate(spec.stage_channels):
        out = active_channels(c, config.width)
        for i, e in enumerate(config.expands[m]):
            mid, s = active_channels(out, e), spec.stage_strides[m] if i == 0 else 1
            conv(cin, mid, 1, 1)
            conv(mid, mid, 3, s)
            conv(mid, out, 1, 1)
            if i == 0:  # projection shortcut, computed at the block's output resolution
                macs += cin * out * size * size
                params += cin * out + 2 * out
            cin = out
    macs += cin * spec.num_classes
    params += cin * spec.num_classes + spec.num_classes
    return macs, params
