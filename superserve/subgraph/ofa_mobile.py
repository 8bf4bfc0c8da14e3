"""Shape-only descriptions of OFA's MobileNet-family SuperNets: one description parameterised by
what tells the families apart (stem and first-block widths, stage widths, strides, blocks per
stage, squeeze-excitation, activations, the head), instantiated for

* :data:`MBV3`: ``ofa_mbv3_d234_e346_k357_w1.0`` (see :mod:`superserve.subgraph.ofa_mbv3`), and
* :data:`PROXYLESS`: ``ofa_proxyless_d234_e346_k357_w1.3`` (see
  :mod:`superserve.subgraph.ofa_proxyless`).

Where the shapes come from: the Once-for-All paper (Cai et al., ICLR 2020) and, for the exact
numbers, the ``ofa`` package's ``OFAMobileNetV3``, ``OFAProxylessNASNets``,
``DynamicMBConvLayer`` and ``DynamicSeparableConv2d``
(github.com/mit-han-lab/once-for-all, ofa/imagenet_classification/elastic_nn/), read, not copied
(tests compare parameter counts and MACs against the package where it is installed).

Common to both: a 3x3/2 stem conv; a fixed first block (depthwise 3x3 + 1x1, expand ratio 1);
elastic stages of inverted-residual blocks (1x1 expand to ``make_divisible(round(in * e), 8)``
middle channels for e in {3, 4, 6}, a depthwise kernel k in {3, 5, 7}, optional squeeze-excitation
with ``make_divisible(middle // 4, 8)`` channels, 1x1 project), depth D in {2, 3, 4} per stage (a
stage with fewer blocks than D runs all of them: ProxylessNAS's last stage has one); then the head.

Box rules per elastic dimension: depth -> the first D blocks; expand -> the leading middle
channels (OFA sorts them by importance, so they are leading); kernel -> the centred crop.
OFA's elastic kernel is a *learned linear transform* of the centre crop (``7to5_matrix``,
``5to3_matrix``, 25x25 and 9x9 per block), and k = 3 transforms the 7->5 result, so it reads the
centre 5x5 of the 7x7 weights (not 3x3) plus both matrices. That is what the boxes say; with
``kernel_transform=False`` a k x k kernel reads its own crop. (MACs are counted from the box,
so with the transform a k = 3 depthwise layer is counted at 25 taps per output instead of 9: an
over-count of that layer's compute, kept as it is so that the published MobileNetV3 figures stay
comparable; the weights read, which caching is about, are exact.)

No ``ofa`` package and no trained weights are needed. Accuracies are not OFA's measured ones (no
ImageNet, no checkpoint here): :func:`stand_in_accuracy` is a stated stand-in, log-linear in MACs
through two published points of the family.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from superserve.subgraph.catalog import Catalog
from superserve.subgraph.space import TensorSpec, WeightSpace

DEPTHS, EXPANDS, KERNELS = (2, 3, 4), (3, 4, 6), (3, 5, 7)
MAX_DEPTH, MAX_KERNEL = max(DEPTHS), max(KERNELS)


def make_divisible(v: float, divisor: int = 8) -> int:
    """The usual MobileNet rounding: to the nearest multiple of ``divisor``, never more than
    10 % below ``v``."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def middle_channels(cin: int, expand: int) -> int:
    return make_divisible(round(cin * expand))


def se_channels(middle: int) -> int:
    return make_divisible(middle // 4)


@dataclass(frozen=True)
class MobileFamily:
    """What tells OFA's MobileNet-like SuperNets apart (widths after the width multiplier)."""

    name: str  # space name prefix, e.g. 'ofa-mbv3-w1.0'
    architecture: str  # OFA's name of the SuperNet
    stem: int  # stem conv output channels
    first_block: int  # first block output channels (its depthwise runs on ``stem`` channels)
    first_residual: bool  # the first block adds its input (MobileNetV3: 16 -> 16)
    stage_widths: tuple[int, ...]
    stage_strides: tuple[int, ...]
    stage_se: tuple[bool, ...]
    stage_acts: tuple[str, ...]  # relu | relu6 | hswish, per elastic stage
    stage_blocks: tuple[int, ...]  # block slots per stage (a depth D runs min(D, slots))
    stem_act: str
    first_act: str
    final_expand: int  # MobileNetV3's 1x1 expand (with norm) before pooling; 0: none
    feature_mix: int  # 1x1 feature mix: after pooling without norm (final_expand > 0), else before with norm
    head_act: str
    published_points: tuple[tuple[float, float], tuple[float, float]]  # (MACs, top-1) for the stand-in
    accuracy_source: str

    @property
    def feature_mix_norm(self) -> bool:
        return not self.final_expand


# MobileNetV3 (Howard et al., "Searching for MobileNetV3", ICCV 2019, Table 3): ImageNet top-1
# of MobileNetV3-Small 1.0 (56 M MACs) and MobileNetV3-Large 1.0 (219 M MACs).
MBV3 = MobileFamily(
    "ofa-mbv3-w1.0", "OFA MobileNetV3 ofa_mbv3_d234_e346_k357_w1.0", 16, 16, True,
    (24, 40, 80, 112, 160), (2, 2, 2, 1, 2), (False, True, False, True, True),
    ("relu", "relu", "hswish", "hswish", "hswish"), (4, 4, 4, 4, 4), "hswish", "relu", 960, 1280, "hswish",
    ((56e6, 0.674), (219e6, 0.752)),
    "stand-in: log-linear in MACs through MobileNetV3-Small/Large 1.0 (Howard et al. 2019)")

# ProxylessNAS (Cai, Zhu, Han, "ProxylessNAS: Direct Neural Architecture Search on Target Task
# and Hardware", ICLR 2019): ImageNet top-1 of ProxylessNAS-Mobile (320 M MACs, 74.6 %) and
# ProxylessNAS-GPU (465 M MACs, 75.1 %), the two searched models of the family OFA's
# ProxylessNAS space generalises. Widths: OFA's base widths 32, 16, 24, 40, 80, 96, 192, 320,
# 1280 x 1.3, each ``make_divisible(., 8)``.
PROXYLESS = MobileFamily(
    "ofa-proxyless-w1.3", "OFA ProxylessNAS ofa_proxyless_d234_e346_k357_w1.3", 40, 24, False,
    (32, 56, 104, 128, 248, 416), (2, 2, 2, 1, 2, 1), (False,) * 6, ("relu6",) * 6, (4, 4, 4, 4, 4, 1),
    "relu6", "relu6", 0, 1664, "relu6",
    ((320e6, 0.746), (465e6, 0.751)),
    "stand-in: log-linear in MACs through ProxylessNAS-Mobile and -GPU (Cai et al. 2019)")


@dataclass(frozen=True)
class MobileConfig:
    """One SubNet: depth per stage, and per block slot kernel and expand ratio; the slots past a
    stage's depth are ignored (normalised to the minimum by :meth:`make`). Subclasses fix the
    family (:attr:`FAMILY`)."""

    FAMILY: ClassVar[MobileFamily]

    depths: tuple[int, ...]
    kernels: tuple[tuple[int, ...], ...]
    expands: tuple[tuple[int, ...], ...]

    @classmethod
    def make(cls, depths, kernels, expands):
        slots = cls.FAMILY.stage_blocks
        d = tuple(min(int(x), n) for x, n in zip(depths, slots)) if len(depths) == len(slots) else tuple(depths)
        ks = tuple(tuple(int(k) if i < d[m] else KERNELS[0] for i, k in enumerate(kk)) for m, kk in enumerate(kernels))
        es = tuple(tuple(int(e) if i < d[m] else EXPANDS[0] for i, e in enumerate(ee)) for m, ee in enumerate(expands))
        cfg = cls(d, ks, es)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        slots = self.FAMILY.stage_blocks
        if len(self.depths) != len(slots) or len(self.kernels) != len(slots) or len(self.expands) != len(slots):
            raise ValueError(f"need {len(slots)} stages")
        for m, n in enumerate(slots):
            if self.depths[m] not in DEPTHS and self.depths[m] != n:
                raise ValueError(f"stage {m}: depth {self.depths[m]} not in {DEPTHS}")
            if self.depths[m] > n:
                raise ValueError(f"stage {m}: depth {self.depths[m]} > its {n} blocks")
            if len(self.kernels[m]) != n or len(self.expands[m]) != n:
                raise ValueError(f"stage {m}: need {n} kernel and expand slots")
            if any(k not in KERNELS for k in self.kernels[m]) or any(e not in EXPANDS for e in self.expands[m]):
                raise ValueError(f"stage {m}: kernels must be in {KERNELS}, expands in {EXPANDS}")

    @property
    def id(self) -> str:
        """e.g. 'd23423-k357.35.3337...-e346.34...' (active blocks only)."""
        ks = ".".join("".join(str(k) for k in kk[:d]) for kk, d in zip(self.kernels, self.depths))
        es = ".".join("".join(str(e) for e in ee[:d]) for ee, d in zip(self.expands, self.depths))
        return f"d{''.join(str(d) for d in self.depths)}-k{ks}-e{es}"

    @classmethod
    def from_id(cls, subnet_id: str):
        """Parse :attr:`id` back (inactive slots come back as the minimum)."""
        what = f"not an {cls.FAMILY.architecture.split(' ofa_')[0]} SubNet id: {subnet_id!r}"
        try:
            d, k, e = subnet_id.split("-")
            depths = tuple(int(c) for c in d[1:])
            ks = [[int(c) for c in s] for s in k[1:].split(".")]
            es = [[int(c) for c in s] for s in e[1:].split(".")]
        except ValueError as exc:
            raise ValueError(f"{what} ({exc})") from None
        slots = cls.FAMILY.stage_blocks
        if len(depths) != len(slots) or len(ks) != len(slots) or len(es) != len(slots) \
                or any(len(x) > n for x, n in zip(ks + es, slots + slots)):
            raise ValueError(what)
        return cls.make(depths, [x + [KERNELS[0]] * (n - len(x)) for x, n in zip(ks, slots)],
                        [x + [EXPANDS[0]] * (n - len(x)) for x, n in zip(es, slots)])

    @classmethod
    def largest(cls):
        slots = cls.FAMILY.stage_blocks
        return cls.make((MAX_DEPTH,) * len(slots), tuple((MAX_KERNEL,) * n for n in slots),
                        tuple((max(EXPANDS),) * n for n in slots))

    @classmethod
    def smallest(cls):
        slots = cls.FAMILY.stage_blocks
        return cls.make((min(DEPTHS),) * len(slots), tuple((KERNELS[0],) * n for n in slots),
                        tuple((EXPANDS[0],) * n for n in slots))

    @classmethod
    def sample(cls, rng: random.Random):
        slots = cls.FAMILY.stage_blocks
        return cls.make(tuple(rng.choice(DEPTHS) for _ in slots),
                        tuple(tuple(rng.choice(KERNELS) for _ in range(n)) for n in slots),
                        tuple(tuple(rng.choice(EXPANDS) for _ in range(n)) for n in slots))


@dataclass(frozen=True)
class Block:
    """One elastic block slot: its name prefix, input/output channels, stride, SE, the input
    and output resolution."""

    prefix: str
    cin: int
    cout: int
    stride: int
    se: bool
    in_hw: int
    out_hw: int
    stage: int
    slot: int
    act: str = "relu"


def family_blocks(fam: MobileFamily, input_size: int = 224) -> list[Block]:
    hw = input_size // 2  # stem stride 2 (the first block keeps the resolution)
    out, cin, k = [], fam.first_block, 1
    for m, (w, s, se, act, n) in enumerate(zip(fam.stage_widths, fam.stage_strides, fam.stage_se, fam.stage_acts,
                                               fam.stage_blocks)):
        for i in range(n):
            stride = s if i == 0 else 1
            o = (hw + stride - 1) // stride
            out.append(Block(f"blocks.{k}", cin, w, stride, se, hw, o, m, i, act))
            hw, cin, k = o, w, k + 1
    return out


def family_space(fam: MobileFamily, input_size: int = 224, element_bytes: int = 4,
                 kernel_transform: bool = True) -> WeightSpace:
    """Every weight tensor at its max shape, in execution order (names follow OFA's modules)."""
    t: list[TensorSpec] = []

    def conv(name: str, cout: int, cin: int, k: int, out_hw: int, bn: bool, bias: bool = False,
             centred: tuple[int, ...] = ()) -> None:
        t.append(TensorSpec(f"{name}.weight", (cout, cin, k, k), name, out_hw * out_hw, centred))
        if bias:
            t.append(TensorSpec(f"{name}.bias", (cout,), name))
        if bn:
            t.append(TensorSpec(f"{name}.bn.weight", (cout,), name))
            t.append(TensorSpec(f"{name}.bn.bias", (cout,), name))

    hw = input_size // 2
    conv("first_conv", fam.stem, 3, 3, hw, True)
    conv("blocks.0.depth_conv", fam.stem, 1, 3, hw, True)
    conv("blocks.0.point_linear", fam.first_block, fam.stem, 1, hw, True)
    for b in family_blocks(fam, input_size):
        mid = middle_channels(b.cin, max(EXPANDS))
        conv(f"{b.prefix}.inverted_bottleneck", mid, b.cin, 1, b.in_hw, True)
        conv(f"{b.prefix}.depth_conv", mid, 1, MAX_KERNEL, b.out_hw, True, centred=(2, 3))
        if kernel_transform:
            for big, small in zip(KERNELS[:0:-1], KERNELS[-2::-1]):
                t.append(TensorSpec(f"{b.prefix}.depth_conv.{big}to{small}_matrix", (small * small, small * small),
                                    f"{b.prefix}.depth_conv"))
        if b.se:
            se = se_channels(mid)
            conv(f"{b.prefix}.se.reduce", se, mid, 1, 1, False, bias=True)
            conv(f"{b.prefix}.se.expand", mid, se, 1, 1, False, bias=True)
        conv(f"{b.prefix}.point_linear", b.cout, mid, 1, b.out_hw, True)
        hw = b.out_hw
    last = fam.stage_widths[-1]
    if fam.final_expand:
        conv("final_expand_layer", fam.final_expand, last, 1, hw, True)
        conv("feature_mix_layer", fam.feature_mix, fam.final_expand, 1, 1, False)
    else:
        conv("feature_mix_layer", fam.feature_mix, last, 1, hw, True)
    t.append(TensorSpec("classifier.weight", (1000, fam.feature_mix), "classifier", 1))
    t.append(TensorSpec("classifier.bias", (1000,), "classifier"))
    return WeightSpace(f"{fam.name}-r{input_size}" + ("" if kernel_transform else "-notransform"), t, element_bytes)


def kernel_read(k: int, kernel_transform: bool = True) -> int:
    """How much of the 7x7 depthwise kernel a k x k SubNet kernel reads (see the module
    docstring: with OFA's transform, k < 7 reads the centre 5x5)."""
    if not kernel_transform or k == MAX_KERNEL:
        return k
    return KERNELS[-2]


def family_extents(fam: MobileFamily, config: MobileConfig, input_size: int = 224, kernel_transform: bool = True
                   ) -> dict[str, tuple[int, ...]]:
    config.validate()
    ext: dict[str, tuple[int, ...]] = {}

    def conv(name: str, cout: int, cin: int, k: int, bn: bool, bias: bool = False) -> None:
        ext[f"{name}.weight"] = (cout, cin, k, k)
        if bias:
            ext[f"{name}.bias"] = (cout,)
        if bn:
            ext[f"{name}.bn.weight"] = ext[f"{name}.bn.bias"] = (cout,)

    conv("first_conv", fam.stem, 3, 3, True)
    conv("blocks.0.depth_conv", fam.stem, 1, 3, True)
    conv("blocks.0.point_linear", fam.first_block, fam.stem, 1, True)
    for b in family_blocks(fam, input_size):
        if b.slot >= config.depths[b.stage]:
            continue
        k, e = config.kernels[b.stage][b.slot], config.expands[b.stage][b.slot]
        mid = middle_channels(b.cin, e)
        conv(f"{b.prefix}.inverted_bottleneck", mid, b.cin, 1, True)
        conv(f"{b.prefix}.depth_conv", mid, 1, kernel_read(k, kernel_transform), True)
        if kernel_transform:
            for big, small in zip(KERNELS[:0:-1], KERNELS[-2::-1]):
                if k <= small:
                    ext[f"{b.prefix}.depth_conv.{big}to{small}_matrix"] = (small * small, small * small)
        if b.se:
            se = se_channels(mid)
            conv(f"{b.prefix}.se.reduce", se, mid, 1, False, bias=True)
            conv(f"{b.prefix}.se.expand", mid, se, 1, False, bias=True)
        conv(f"{b.prefix}.point_linear", b.cout, mid, 1, True)
    last = fam.stage_widths[-1]
    if fam.final_expand:
        conv("final_expand_layer", fam.final_expand, last, 1, True)
        conv("feature_mix_layer", fam.feature_mix, fam.final_expand, 1, False)
    else:
        conv("feature_mix_layer", fam.feature_mix, last, 1, True)
    ext["classifier.weight"] = (1000, fam.feature_mix)
    ext["classifier.bias"] = (1000,)
    return ext


def family_stand_in_accuracy(fam: MobileFamily, macs: float) -> float:
    """A stated stand-in for a SubNet's ImageNet top-1: log-linear in MACs through the family's
    two published points (an extrapolation beyond them, which OFA's larger SubNets reach: it
    likely misstates them). It preserves the ordering by cost, which is what the scheduling study
    reads; it is not OFA's measured accuracy."""
    (m0, a0), (m1, a1) = fam.published_points
    return a0 + (a1 - a0) * math.log(macs / m0) / math.log(m1 / m0)


def family_catalog(fam: MobileFamily, config_cls: type[MobileConfig], num_subnets: int = 48, pool: int = 3000,
                   seed: int = 0, input_size: int = 224, element_bytes: int = 4,
                   kernel_transform: bool = True) -> Catalog:
    """``num_subnets`` SubNets spread over the cost range, from a seeded random pool plus the
    smallest and the largest SubNet. Ids are :attr:`MobileConfig.id`."""
    space = family_space(fam, input_size, element_bytes, kernel_transform)
    rng = random.Random(seed)
    configs = {c.id: c for c in [config_cls.smallest(), config_cls.largest()] +
               [config_cls.sample(rng) for _ in range(pool)]}
    cfgs = list(configs.values())
    extents = [family_extents(fam, c, input_size, kernel_transform) for c in cfgs]
    boxes = np.stack([space.box(e) for e in extents])
    macs = space.layer_macs(boxes).sum(axis=1)
    nbytes = space.elements(boxes).sum(axis=1)
    # Spread over the cost range: split the pool into equal-count MAC bins and keep, per bin,
    # the SubNet reading the fewest bytes (the cheapest to serve at that stand-in accuracy).
    order = np.argsort(macs, kind="stable")
    front = sorted({int(b[np.argmin(nbytes[b])]) for b in np.array_split(order, num_subnets) if b.size} | {0, 1},
                   key=lambda i: macs[i])  # 0, 1: the smallest and the largest SubNet
    acc = np.array([family_stand_in_accuracy(fam, float(macs[i])) for i in front])
    private = np.array([2 * sum(e[0] for n, e in extents[i].items() if n.endswith(".bn.weight")) * element_bytes
                        for i in front], dtype=np.int64)
    return Catalog(space, tuple(cfgs[i].id for i in front), boxes[front], acc, private, {
        "architecture": f"{fam.architecture} (shape only)",
        "accuracy_source": fam.accuracy_source,
        "element_bytes": element_bytes, "input_size": input_size, "kernel_transform": kernel_transform,
        "selection": f"{len(front)} MAC bins of {len(cfgs)} seeded random SubNets (seed {seed}), fewest bytes per bin"})
