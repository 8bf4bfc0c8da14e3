"""A shape-only description of OFA's MobileNetV3 SuperNet, ``ofa_mbv3_d234_e346_k357_w1.0``.

Where the shapes come from: the Once-for-All paper (Cai et al., ICLR 2020) and, for the exact
numbers, the ``ofa`` package's ``OFAMobileNetV3`` and ``DynamicMBConvLayer``
(github.com/mit-han-lab/once-for-all, ofa/imagenet_classification/elastic_nn/), read, not
copied: stem 3x3/2 conv to 16 channels; a fixed first block (depthwise 3x3 + 1x1, 16 -> 16);
five elastic stages of up to 4 MobileNetV3 blocks with widths 24, 40, 80, 112, 160, strides
2, 2, 2, 1, 2, squeeze-excitation in stages 2, 4 and 5; then 1x1 160 -> 960, 1x1 960 -> 1280
(after pooling) and a 1280 -> 1000 classifier. Per block: middle channels
``make_divisible(round(in * e), 8)`` for expand ratio e in {3, 4, 6}, depthwise kernel k in
{3, 5, 7}, SE middle ``make_divisible(middle // 4, 8)``; depth D in {2, 3, 4} per stage.

Box rules per elastic dimension: depth -> the first D blocks; expand -> the leading middle
channels (OFA sorts them by importance, so they are leading); kernel -> the centred crop.
One subtlety of OFA's elastic kernel: a k < 7 kernel is a *learned linear transform* of the
centre crop (``7to5_matrix``, ``5to3_matrix``, 25x25 and 9x9 per block), and k = 3 transforms
the 7->5 result, so it reads the centre 5x5 of the 7x7 weights (not 3x3) plus both matrices.
That is what the boxes say; with ``kernel_transform=False`` a k x k kernel reads its own crop.

Weights are modelled here without the ``ofa`` package and without OFA's trained weights.
Accuracies are not OFA's measured ones (no ImageNet, no checkpoint here): :func:`stand_in_accuracy`
is a stated stand-in, log-linear in MACs through two published MobileNetV3 points.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from superserve.subgraph.catalog import Catalog
from superserve.subgraph.space import TensorSpec, WeightSpace

STAGE_WIDTHS = (24, 40, 80, 112, 160)
STAGE_STRIDES = (2, 2, 2, 1, 2)
STAGE_SE = (False, True, False, True, True)
STEM, FIRST_BLOCK, FINAL_EXPAND, FEATURE_MIX = 16, 16, 960, 1280
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
class MbV3Config:
    """One SubNet: depth per stage, and per block slot (5 x 4) kernel and expand ratio; the
    slots past a stage's depth are ignored (normalised to the minimum by :meth:`make`)."""

    depths: tuple[int, ...]
    kernels: tuple[tuple[int, ...], ...]
    expands: tuple[tuple[int, ...], ...]

    @classmethod
    def make(cls, depths, kernels, expands) -> "MbV3Config":
        d = tuple(int(x) for x in depths)
        ks = tuple(tuple(int(k) if i < d[m] else KERNELS[0] for i, k in enumerate(kk)) for m, kk in enumerate(kernels))
        es = tuple(tuple(int(e) if i < d[m] else EXPANDS[0] for i, e in enumerate(ee)) for m, ee in enumerate(expands))
        cfg = cls(d, ks, es)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if len(self.depths) != len(STAGE_WIDTHS) or len(self.kernels) != len(STAGE_WIDTHS) \
                or len(self.expands) != len(STAGE_WIDTHS):
            raise ValueError(f"need {len(STAGE_WIDTHS)} stages")
        for m in range(len(STAGE_WIDTHS)):
            if self.depths[m] not in DEPTHS:
                raise ValueError(f"stage {m}: depth {self.depths[m]} not in {DEPTHS}")
            if len(self.kernels[m]) != MAX_DEPTH or len(self.expands[m]) != MAX_DEPTH:
                raise ValueError(f"stage {m}: need {MAX_DEPTH} kernel and expand slots")
            if any(k not in KERNELS for k in self.kernels[m]) or any(e not in EXPANDS for e in self.expands[m]):
                raise ValueError(f"stage {m}: kernels must be in {KERNELS}, expands in {EXPANDS}")

    @property
    def id(self) -> str:
        """e.g. 'd23423-k357.35.3337...-e346.34...' (active blocks only)."""
        ks = ".".join("".join(str(k) for k in kk[:d]) for kk, d in zip(self.kernels, self.depths))
        es = ".".join("".join(str(e) for e in ee[:d]) for ee, d in zip(self.expands, self.depths))
        return f"d{''.join(str(d) for d in self.depths)}-k{ks}-e{es}"

    @classmethod
    def from_id(cls, subnet_id: str) -> "MbV3Config":
        """Parse :attr:`id` back (inactive slots come back as the minimum)."""
        try:
            d, k, e = subnet_id.split("-")
            depths = tuple(int(c) for c in d[1:])
            ks = [[int(c) for c in s] for s in k[1:].split(".")]
            es = [[int(c) for c in s] for s in e[1:].split(".")]
        except ValueError as exc:
            raise ValueError(f"not an OFA-MobileNetV3 SubNet id: {subnet_id!r} ({exc})") from None
        if len(ks) != len(depths) or len(es) != len(depths):
            raise ValueError(f"not an OFA-MobileNetV3 SubNet id: {subnet_id!r}")
        return cls.make(depths, [x + [KERNELS[0]] * (MAX_DEPTH - len(x)) for x in ks],
                        [x + [EXPANDS[0]] * (MAX_DEPTH - len(x)) for x in es])

    @classmethod
    def largest(cls) -> "MbV3Config":
        n = len(STAGE_WIDTHS)
        return cls.make((MAX_DEPTH,) * n, ((MAX_KERNEL,) * MAX_DEPTH,) * n, ((max(EXPANDS),) * MAX_DEPTH,) * n)

    @classmethod
    def smallest(cls) -> "MbV3Config":
        n = len(STAGE_WIDTHS)
        return cls.make((min(DEPTHS),) * n, ((KERNELS[0],) * MAX_DEPTH,) * n, ((EXPANDS[0],) * MAX_DEPTH,) * n)

    @classmethod
    def sample(cls, rng: random.Random) -> "MbV3Config":
        n = len(STAGE_WIDTHS)
        return cls.make(tuple(rng.choice(DEPTHS) for _ in range(n)),
                        tuple(tuple(rng.choice(KERNELS) for _ in range(MAX_DEPTH)) for _ in range(n)),
                        tuple(tuple(rng.choice(EXPANDS) for _ in range(MAX_DEPTH)) for _ in range(n)))


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


def blocks(input_size: int = 224) -> list[Block]:
    hw = input_size // 2  # stem stride 2 (the first block keeps the resolution)
    out, cin, k = [], FIRST_BLOCK, 1
    for m, (w, s, se) in enumerate(zip(STAGE_WIDTHS, STAGE_STRIDES, STAGE_SE)):
        for i in range(MAX_DEPTH):
            stride = s if i == 0 else 1
            o = (hw + stride - 1) // stride
            out.append(Block(f"blocks.{k}", cin, w, stride, se, hw, o, m, i))
            hw, cin, k = o, w, k + 1
    return out


def mbv3_space(input_size: int = 224, element_bytes: int = 4, kernel_transform: bool = True) -> WeightSpace:
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
    conv("first_conv", STEM, 3, 3, hw, True)
    conv("blocks.0.depth_conv", STEM, 1, 3, hw, True)
    conv("blocks.0.point_linear", FIRST_BLOCK, STEM, 1, hw, True)
    for b in blocks(input_size):
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
    conv("final_expand_layer", FINAL_EXPAND, STAGE_WIDTHS[-1], 1, hw, True)
    conv("feature_mix_layer", FEATURE_MIX, FINAL_EXPAND, 1, 1, False)
    t.append(TensorSpec("classifier.weight", (1000, FEATURE_MIX), "classifier", 1))
    t.append(TensorSpec("classifier.bias", (1000,), "classifier"))
    return WeightSpace(f"ofa-mbv3-w1.0-r{input_size}" + ("" if kernel_transform else "-notransform"), t, element_bytes)


def kernel_read(k: int, kernel_transform: bool = True) -> int:
    """How much of the 7x7 depthwise kernel a k x k SubNet kernel reads (see the module
    docstring: with OFA's transform, k < 7 reads the centre 5x5)."""
    if not kernel_transform or k == MAX_KERNEL:
        return k
    return KERNELS[-2]


def mbv3_extents(config: MbV3Config, input_size: int = 224, kernel_transform: bool = True
                 ) -> dict[str, tuple[int, ...]]:
    config.validate()
    ext: dict[str, tuple[int, ...]] = {}

    def conv(name: str, cout: int, cin: int, k: int, bn: bool, bias: bool = False) -> None:
        ext[f"{name}.weight"] = (cout, cin, k, k)
        if bias:
            ext[f"{name}.bias"] = (cout,)
        if bn:
            ext[f"{name}.bn.weight"] = ext[f"{name}.bn.bias"] = (cout,)

    conv("first_conv", STEM, 3, 3, True)
    conv("blocks.0.depth_conv", STEM, 1, 3, True)
    conv("blocks.0.point_linear", FIRST_BLOCK, STEM, 1, True)
    for b in blocks(input_size):
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
    conv("final_expand_layer", FINAL_EXPAND, STAGE_WIDTHS[-1], 1, True)
    conv("feature_mix_layer", FEATURE_MIX, FINAL_EXPAND, 1, False)
    ext["classifier.weight"] = (1000, FEATURE_MIX)
    ext["classifier.bias"] = (1000,)
    return ext


# MobileNetV3 (Howard et al., "Searching for MobileNetV3", ICCV 2019, Table 3): ImageNet top-1
# of MobileNetV3-Small 1.0 (56 M MACs) and MobileNetV3-Large 1.0 (219 M MACs).
PUBLISHED_POINTS = ((56e6, 0.674), (219e6, 0.752))


def stand_in_accuracy(macs: float) -> float:
    """A stated stand-in for a SubNet's ImageNet top-1: log-linear in MACs through the two
    published MobileNetV3 points above (an extrapolation beyond 219 M MACs, which OFA's larger
    SubNets reach: it likely overstates them). It preserves the ordering by cost, which is what
    the scheduling study reads; it is not OFA's measured accuracy."""
    (m0, a0), (m1, a1) = PUBLISHED_POINTS
    return a0 + (a1 - a0) * math.log(macs / m0) / math.log(m1 / m0)


def mbv3_catalog(num_subnets: int = 48, pool: int = 3000, seed: int = 0, input_size: int = 224,
                 element_bytes: int = 4, kernel_transform: bool = True) -> Catalog:
    """``num_subnets`` SubNets spread over the cost range, from a seeded random pool plus the
    smallest and the largest SubNet. Ids are :attr:`MbV3Config.id`."""
    space = mbv3_space(input_size, element_bytes, kernel_transform)
    rng = random.Random(seed)
    configs = {c.id: c for c in [MbV3Config.smallest(), MbV3Config.largest()] +
               [MbV3Config.sample(rng) for _ in range(pool)]}
    cfgs = list(configs.values())
    extents = [mbv3_extents(c, input_size, kernel_transform) for c in cfgs]
    boxes = np.stack([space.box(e) for e in extents])
    macs = space.layer_macs(boxes).sum(axis=1)
    nbytes = space.elements(boxes).sum(axis=1)
    # Spread over the cost range: split the pool into equal-count MAC bins and keep, per bin,
    # the SubNet reading the fewest bytes (the cheapest to serve at that stand-in accuracy).
    order = np.argsort(macs, kind="stable")
    front = sorted({int(b[np.argmin(nbytes[b])]) for b in np.array_split(order, num_subnets) if b.size} | {0, 1},
                   key=lambda i: macs[i])  # 0, 1: the smallest and the largest SubNet
    acc = np.array([stand_in_accuracy(float(macs[i])) for i in front])
    private = np.array([2 * sum(e[0] for n, e in extents[i].items() if n.endswith(".bn.weight")) * element_bytes
                        for i in front], dtype=np.int64)
    return Catalog(space, tuple(cfgs[i].id for i in front), boxes[front], acc, private, {
        "architecture": "OFA MobileNetV3 ofa_mbv3_d234_e346_k357_w1.0 (shape only)",
        "accuracy_source": "stand-in: log-linear in MACs through MobileNetV3-Small/Large 1.0 (Howard et al. 2019)",
        "element_bytes": element_bytes, "input_size": input_size, "kernel_transform": kernel_transform,
        "selection": f"{len(front)} MAC bins of {len(cfgs)} seeded random SubNets (seed {seed}), fewest bytes per bin"})
