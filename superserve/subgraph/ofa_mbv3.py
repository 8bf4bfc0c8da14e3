"""A shape-only description of OFA's MobileNetV3 SuperNet, ``ofa_mbv3_d234_e346_k357_w1.0``: the
:data:`~superserve.subgraph.ofa_mobile.MBV3` instance of the MobileNet-family description in
:mod:`superserve.subgraph.ofa_mobile` (shapes, box rules and the kernel-transform subtlety are
explained there).

Stem 3x3/2 conv to 16 channels; a fixed first block (depthwise 3x3 + 1x1, 16 -> 16, residual);
five elastic stages of up to 4 MobileNetV3 blocks with widths 24, 40, 80, 112, 160, strides
2, 2, 2, 1, 2, squeeze-excitation in stages 2, 4 and 5; then 1x1 160 -> 960, 1x1 960 -> 1280
(after pooling, no norm) and a 1280 -> 1000 classifier.

Accuracies are not OFA's measured ones (no ImageNet, no checkpoint here): :func:`stand_in_accuracy`
is a stated stand-in, log-linear in MACs through two published MobileNetV3 points.
"""
from __future__ import annotations

from superserve.subgraph.catalog import Catalog
from superserve.subgraph.ofa_mobile import (DEPTHS, EXPANDS, KERNELS, MAX_DEPTH, MAX_KERNEL, MBV3, Block,
                                            MobileConfig, family_blocks, family_catalog, family_extents,
                                            family_space, family_stand_in_accuracy, kernel_read, make_divisible,
                                            middle_channels, se_channels)
from superserve.subgraph.space import WeightSpace

__all__ = ["STAGE_WIDTHS", "STAGE_STRIDES", "STAGE_SE", "STEM", "FIRST_BLOCK", "FINAL_EXPAND", "FEATURE_MIX",
           "DEPTHS", "EXPANDS", "KERNELS", "MAX_DEPTH", "MAX_KERNEL", "make_divisible", "middle_channels",
           "se_channels", "MbV3Config", "Block", "blocks", "mbv3_space", "kernel_read", "mbv3_extents",
           "PUBLISHED_POINTS", "stand_in_accuracy", "mbv3_catalog"]

STAGE_WIDTHS, STAGE_STRIDES, STAGE_SE = MBV3.stage_widths, MBV3.stage_strides, MBV3.stage_se
STEM, FIRST_BLOCK, FINAL_EXPAND, FEATURE_MIX = MBV3.stem, MBV3.first_block, MBV3.final_expand, MBV3.feature_mix
# MobileNetV3 (Howard et al., "Searching for MobileNetV3", ICCV 2019, Table 3): ImageNet top-1
# of MobileNetV3-Small 1.0 (56 M MACs) and MobileNetV3-Large 1.0 (219 M MACs).
PUBLISHED_POINTS = MBV3.published_points


class MbV3Config(MobileConfig):
    """One OFA-MobileNetV3 SubNet: depth per stage, and per block slot (5 x 4) kernel and expand
    ratio; the slots past a stage's depth are ignored (normalised to the minimum by :meth:`make`)."""

    FAMILY = MBV3


def blocks(input_size: int = 224) -> list[Block]:
    return family_blocks(MBV3, input_size)


def mbv3_space(input_size: int = 224, element_bytes: int = 4, kernel_transform: bool = True) -> WeightSpace:
    """Every weight tensor at its max shape, in execution order (names follow OFA's modules)."""
    return family_space(MBV3, input_size, element_bytes, kernel_transform)


def mbv3_extents(config: MbV3Config, input_size: int = 224, kernel_transform: bool = True
                 ) -> dict[str, tuple[int, ...]]:
    return family_extents(MBV3, config, input_size, kernel_transform)


def stand_in_accuracy(macs: float) -> float:
    """Log-linear in MACs through the two published MobileNetV3 points (an extrapolation beyond
    219 M MACs, which OFA's larger SubNets reach: it likely overstates them)."""
    return family_stand_in_accuracy(MBV3, macs)


def mbv3_catalog(num_subnets: int = 48, pool: int = 3000, seed: int = 0, input_size: int = 224,
                 element_bytes: int = 4, kernel_transform: bool = True) -> Catalog:
    """``num_subnets`` SubNets spread over the cost range, from a seeded random pool plus the
    smallest and the largest SubNet. Ids are :attr:`MbV3Config.id`."""
    return family_catalog(MBV3, MbV3Config, num_subnets, pool, seed, input_size, element_bytes, kernel_transform)
