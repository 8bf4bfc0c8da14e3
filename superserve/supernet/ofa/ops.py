"""SubNetAct operators that OFA's MobileNet family needs beyond WeightSlice and SubnetNorm:
elastic kernels and a sliced squeeze-excite.

Both hold max-size parameters and take the active sizes as plain integers at call time.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def center_crop(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """The centred size x size window of a square kernel (a view)."""
    start = (kernel.shape[-1] - size) // 2
    return kernel[..., start:start + size, start:start + size]


def transform_name(larger: int, smaller: int) -> str:
    """OFA's parameter name for the learned map from one kernel size to the next smaller."""
    return f"{larger}to{smaller}_matrix"


class ElasticDepthwiseConv(nn.Module):
    """A depthwise convolution whose kernel size is chosen per SubNet (OFA's elastic kernel).

    The largest kernel is the stored weight. A smaller kernel is the centre of the next larger
    one passed through a learned linear map (OFA's ``7to5`` and ``5to3`` matrices), one kernel
    size step at a time. The SubNet's channels are the leading ones of every derived kernel,
    and a channel's derived kernel depends only on that channel, so the derived kernels are
    computed once for all channels (``derive_kernels``, after loading weights) and sliced per
    SubNet: actuation stays a plan swap and a forward pass copies nothing.
    """

    def __init__(self, max_channels: int, kernel_choices: Sequence[int], stride: int = 1) -> None:
        super().__init__()
        self.kernel_choices = tuple(sorted(set(kernel_choices)))
        self.stride = stride
        kmax = self.kernel_choices[-1]
        self.weight = nn.Parameter(torch.empty(max_channels, 1, kmax, kmax))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.transforms = nn.ParameterDict({
            transform_name(big, small): nn.Parameter(torch.eye(small * small))
            for small, big in zip(self.kernel_choices, self.kernel_choices[1:])
        })
        for k in self.kernel_choices[:-1]:
            self.register_buffer(f"kernel{k}", torch.empty(max_channels, 1, k, k), persistent=False)
        self.derive_kernels()

    @torch.no_grad()
    def derive_kernels(self) -> None:
        """Recompute the smaller kernels from the stored weight and transform matrices."""
        kernel = self.weight
        ks = self.kernel_choices
        for big, small in zip(reversed(ks), reversed(ks[:-1])):
            crop = center_crop(kernel, small).reshape(-1, small * small)
            kernel = F.linear(crop, self.transforms[transform_name(big, small)]).reshape(-1, 1, small, small)
            getattr(self, f"kernel{small}").copy_(kernel)

    def kernel(self, size: int) -> torch.Tensor:
        return self.weight if size == self.kernel_choices[-1] else getattr(self, f"kernel{size}")

    def forward(self, x: torch.Tensor, kernel_size: int) -> torch.Tensor:
        c = x.shape[1]
        w = self.kernel(kernel_size)[:c]
        return F.conv2d(x, w, None, self.stride, kernel_size // 2, 1, c)


class SlicedSqueezeExcite(nn.Module):
    """Squeeze-excite (OFA/MobileNetV3: mean pool, 1x1 reduce + ReLU, 1x1 expand + hard
    sigmoid, rescale) on the first ``channels`` channels with a ``hidden``-wide bottleneck."""

    def __init__(self, max_channels: int, max_hidden: int) -> None:
        super().__init__()
        self.reduce_weight = nn.Parameter(torch.empty(max_hidden, max_channels, 1, 1))
        self.reduce_bias = nn.Parameter(torch.zeros(max_hidden))
        self.expand_weight = nn.Parameter(torch.empty(max_channels, max_hidden, 1, 1))
        self.expand_bias = nn.Parameter(torch.zeros(max_channels))
        nn.init.kaiming_normal_(self.reduce_weight, mode="fan_out")
        nn.init.kaiming_normal_(self.expand_weight, mode="fan_out")

    def forward(self, x: torch.Tensor, hidden: int) -> torch.Tensor:
        c = x.shape[1]
        y = x.mean((2, 3), keepdim=True)
        y = F.relu(F.conv2d(y, self.reduce_weight[:hidden, :c], self.reduce_bias[:hidden]))
        y = F.hardsigmoid(F.conv2d(y, self.expand_weight[:c, :hidden], self.expand_bias[:c]))
        return x * y
