"""A shape-only description of OFA's ProxylessNAS SuperNet, ``ofa_proxyless_d234_e346_k357_w1.3``:
the :data:`~superserve.subgraph.ofa_mobile.PROXYLESS` instance of the MobileNet-family
description in :mod:`superserve.subgraph.ofa_mobile` (box rules and the kernel transform are
explained there).

Shapes as in the ``ofa`` package's ``OFAProxylessNASNets(width_mult=1.3, ks_list=[3, 5, 7],
expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])``: base widths 32, 16, 24, 40, 80, 96, 192,
320, 1280 times 1.3, each ``make_divisible(., 8)``: stem 3x3/2 conv to 40 channels (ReLU6); a fixed
first block (depthwise 3x3 on 40, 1x1 40 -> 24, no residual); six elastic stages of widths 32,
56, 104, 128, 248, 416, strides 2, 2, 2, 1, 2, 1, with 4, 4, 4, 4, 4 and 1 block slots (the last
stage is always its one block, with elastic kernel and expand), no squeeze-excitation, ReLU6
throughout; then a 1x1 416 -> 1664 feature mix with norm before pooling and a 1664 -> 1000
classifier. 7.94 M parameters and 1,005 M MACs at 224 px for the largest SubNet (the package's
own counts; tested where it is installed).

Accuracies are not OFA's (no ImageNet, no checkpoint): a stand-in, log-linear in MACs through
ProxylessNAS-Mobile (320 M MACs, 74.6 %) and ProxylessNAS-GPU (465 M MACs, 75.1 %) (Cai et al.,
ICLR 2019).
"""
from __future__ import annotations

from superserve.subgraph.catalog import Catalog
from superserve.subgraph.ofa_mobile import (PROXYLESS, Block, MobileConfig, family_blocks, family_catalog,
                                            family_extents, family_space, family_stand_in_accuracy)
from superserve.subgraph.space import WeightSpace


class ProxylessConfig(MobileConfig):
    """One OFA-ProxylessNAS SubNet: depth per stage (the last stage: 1), kernel and expand per
    block slot (4, 4, 4, 4, 4, 1 slots)."""

    FAMILY = PROXYLESS


def proxyless_blocks(input_size: int = 224) -> list[Block]:
    return family_blocks(PROXYLESS, input_size)


def proxyless_space(input_size: int = 224, element_bytes: int = 4, kernel_transform: bool = True) -> WeightSpace:
    return family_space(PROXYLESS, input_size, element_bytes, kernel_transform)


def proxyless_extents(config: ProxylessConfig, input_size: int = 224, kernel_transform: bool = True
                      ) -> dict[str, tuple[int, ...]]:
    return family_extents(PROXYLESS, config, input_size, kernel_transform)


def stand_in_accuracy(macs: float) -> float:
    return family_stand_in_accuracy(PROXYLESS, macs)


def proxyless_catalog(num_subnets: int = 48, pool: int = 3000, seed: int = 0, input_size: int = 224,
                      element_bytes: int = 4, kernel_transform: bool = True) -> Catalog:
    return family_catalog(PROXYLESS, ProxylessConfig, num_subnets, pool, seed, input_size, element_bytes,
                          kernel_transform)
