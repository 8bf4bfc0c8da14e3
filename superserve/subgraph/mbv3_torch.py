"""Weight-shared OFA MobileNet-family SuperNets in plain PyTorch (MobileNetV3 and ProxylessNAS),
with random weights at the exact shapes of :func:`~superserve.subgraph.ofa_mobile.family_space`,
for real-CPU measurements and for proving the boxes (no ``ofa`` package, no trained weights:
latency and memory traffic do not depend on the values).

Every SubNet reads its tensors through :meth:`WeightSpace.slices` of its box, so what it
touches in memory is exactly what the SubGraph algebra says it shares with another SubNet
(tests check this by where gradients land). Norms use the shared affine parameters with unit
statistics (the per-SubNet statistics are a few KB and do not change what is measured).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from superserve.subgraph.ofa_mbv3 import MbV3Config
from superserve.subgraph.ofa_mobile import (KERNELS, MAX_KERNEL, MBV3, PROXYLESS, MobileConfig, MobileFamily,
                                            family_blocks, family_extents, family_space)
from superserve.subgraph.ofa_proxyless import ProxylessConfig



def _act(kind: str):
    # looked up at call time: tests patch torch.nn.functional.relu
    return {"relu": lambda x: F.relu(x), "relu6": lambda x: F.relu6(x), "hswish": lambda x: F.hardswish(x)}[kind]


class SharedMobile(nn.Module):
    def __init__(self, family: MobileFamily, input_size: int = 224, kernel_transform: bool = True,
                 seed: int = 0) -> None:
        super().__init__()
        self.family, self.input_size, self.kernel_transform = family, input_size, kernel_transform
        self.space = family_space(family, input_size, 4, kernel_transform)
        gen = torch.Generator().manual_seed(seed)
        self.weights = nn.ParameterDict()
        for t in self.space.tensors:
            fan_in = max(1, int(torch.tensor(t.shape[1:]).prod()) if len(t.shape) > 1 else 1)
            w = torch.randn(t.shape, generator=gen) / fan_in ** 0.5
            if t.name.endswith("_matrix"):
                w = torch.eye(t.shape[0]) + 0.01 * w
            elif t.name.endswith("bn.weight"):
                w = 1.0 + 0.1 * w
            elif len(t.shape) == 1:
                w = 0.01 * w  # small biases: no channel starts dead behind a ReLU
            self.weights[self._key(t.name)] = nn.Parameter(w)
        widest = max(t.shape[0] for t in self.space.tensors)
        self.register_buffer("zeros", torch.zeros(widest))
        self.register_buffer("ones", torch.ones(widest))
        self._boxes: dict[str, object] = {}

    @staticmethod
    def _key(name: str) -> str:
        return name.replace(".", "__")

    def box(self, config: MobileConfig):
        b = self._boxes.get(config.id)
        if b is None:
            b = self._boxes[config.id] = self.space.box(
                family_extents(self.family, config, self.input_size, self.kernel_transform))
        return b

    def forward(self, x: torch.Tensor, config: MobileConfig) -> torch.Tensor:
        box, sp, fam = self.box(config), self.space, self.family

        def w(name: str) -> torch.Tensor:
            return self.weights[self._key(name)][sp.slices(box, name)]

        def bn(h: torch.Tensor, name: str) -> torch.Tensor:
            c = h.shape[1]
            return F.batch_norm(h, self.zeros[:c], self.ones[:c], w(f"{name}.bn.weight"), w(f"{name}.bn.bias"),
                                False, 0.0, 1e-5)

        x = _act(fam.stem_act)(bn(F.conv2d(x, w("first_conv.weight"), None, 2, 1), "first_conv"))
        h = _act(fam.first_act)(bn(F.conv2d(x, w("blocks.0.depth_conv.weight"), None, 1, 1, 1, fam.stem),
                                   "blocks.0.depth_conv"))
        h = bn(F.conv2d(h, w("blocks.0.point_linear.weight")), "blocks.0.point_linear")
        x = x + h if fam.first_residual else h
        for b in family_blocks(fam, self.input_size):
            if b.slot >= config.depths[b.stage]:
                continue
            k = config.kernels[b.stage][b.slot]
            act = _act(b.act)
            p = b.prefix
            h = act(bn(F.conv2d(x, w(f"{p}.inverted_bottleneck.weight")), f"{p}.inverted_bottleneck"))
            mid = h.shape[1]
            h = act(bn(F.conv2d(h, self._kernel(w, p, k), None, b.stride, k // 2, 1, mid), f"{p}.depth_conv"))
            if b.se:
                y = h.mean((2, 3), keepdim=True)
                y = F.relu(F.conv2d(y, w(f"{p}.se.reduce.weight"), w(f"{p}.se.reduce.bias")))
                h = h * F.hardsigmoid(F.conv2d(y, w(f"{p}.se.expand.weight"), w(f"{p}.se.expand.bias")))
            h = bn(F.conv2d(h, w(f"{p}.point_linear.weight")), f"{p}.point_linear")
            x = x + h if b.stride == 1 and b.cin == b.cout else h
        head = _act(fam.head_act)
        if fam.final_expand:
            x = head(bn(F.conv2d(x, w("final_expand_layer.weight")), "final_expand_layer"))
            x = head(F.conv2d(x.mean((2, 3), keepdim=True), w("feature_mix_layer.weight")))
        else:
            x = head(bn(F.conv2d(x, w("feature_mix_layer.weight")), "feature_mix_layer")).mean((2, 3), keepdim=True)
        return F.linear(torch.flatten(x, 1), w("classifier.weight"), w("classifier.bias"))

    def _kernel(self, w, prefix: str, k: int) -> torch.Tensor:
        """The depthwise kernel of size k: the centre crop, through OFA's learned transforms
        (7 -> 5 on the centre 5x5, then 5 -> 3 on the result's centre 3x3)."""
        kernel = w(f"{prefix}.depth_conv.weight")
        if not self.kernel_transform or k == MAX_KERNEL:
            return kernel
        size = kernel.shape[-1]
        for big, small in zip(KERNELS[:0:-1], KERNELS[-2::-1]):
            if k > small:
                break
            lo = (size - small) // 2
            crop = kernel[:, :, lo:lo + small, lo:lo + small].reshape(-1, small * small)
            kernel = F.linear(crop, w(f"{prefix}.depth_conv.{big}to{small}_matrix")).reshape(
                kernel.shape[0], 1, small, small)
            size = small
        return kernel


class SharedMbV3(SharedMobile):
    """OFA MobileNetV3 ``ofa_mbv3_d234_e346_k357_w1.0``; SubNets are :class:`MbV3Config`."""

    def __init__(self, input_size: int = 224, kernel_transform: bool = True, seed: int = 0) -> None:
        super().__init__(MBV3, input_size, kernel_transform, seed)


class SharedProxyless(SharedMobile):
    """OFA ProxylessNAS ``ofa_proxyless_d234_e346_k357_w1.3``; SubNets are :class:`ProxylessConfig`."""

    def __init__(self, input_size: int = 224, kernel_transform: bool = True, seed: int = 0) -> None:
        super().__init__(PROXYLESS, input_size, kernel_transform, seed)


__all__ = ["SharedMobile", "SharedMbV3", "SharedProxyless", "MbV3Config", "ProxylessConfig"]
