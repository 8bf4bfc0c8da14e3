"""The SubNetAct operators: WeightSlice (conv, linear), SubnetNorm and LayerSelect.

Each operator holds max-size parameters and receives the active sizes of the current SubNet
as plain integers at call time. Nothing here allocates or copies a parameter: slicing the
leading dimensions of a parameter is a view.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


VIEW_BYTES = 720  # resident bytes of one view tensor (measured by RSS, torch 2.13 CPU: ~710)


class ProgramCache(nn.Module):
    """A SuperNet with compiled serving programs: views of its tensors cached in ``_programs``
    (entries whose last item is the program, a nest of tuples) and ``_views`` ((tensor, view)
    pairs), dropped whenever the tensors may be replaced (``.to()``, ``.half()``,
    ``load_state_dict``)."""

    def program_bytes(self) -> int:
        """Bytes held by the compiled programs beyond the SuperNet's own tensors: no tensor
        data, only view headers (VIEW_BYTES each, measured: TensorImpl, sizes and strides,
        Python object) and the tuples holding them. Shared views count once."""
        import sys

        total, seen = 0, set()
        stack = [entry[-1] for entry in self._programs.values()] + [v for _, v in self._views.values()]
        while stack:
            item = stack.pop()
            if isinstance(item, tuple):
                total += sys.getsizeof(item)
                stack.extend(item)
            elif isinstance(item, torch.Tensor) and id(item) not in seen:
                seen.add(id(item))
                total += VIEW_BYTES
        return total

    def drop_programs(self) -> None:
        for name in ("_programs", "_views"):
            cache = self.__dict__.get(name)
            if cache:
                cache.clear()

    def _apply(self, fn, *args, **kwargs):
        self.drop_programs()
        return super()._apply(fn, *args, **kwargs)

    def load_state_dict(self, *args, **kwargs):
        self.drop_programs()
        return super().load_state_dict(*args, **kwargs)


class SlicedConv2d(nn.Module):
    """WeightSlice for convolutions: uses weight[:out_channels, :in_channels] of a max-size
    kernel; the input channel count is taken from the input itself."""

    def __init__(self, max_in: int, max_out: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        self.max_in, self.max_out = max_in, max_out
        self.stride, self.padding = stride, kernel_size // 2
        self.weight = nn.Parameter(torch.empty(max_out, max_in, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor, out_channels: int) -> torch.Tensor:
        w = self.weight[:out_channels, : x.shape[1]]
        return F.conv2d(x, w, None, self.stride, self.padding)


class SlicedLinear(nn.Module):
    """WeightSlice for the classifier: all outputs, the first in_features input columns."""

    def __init__(self, max_in: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, max_in))
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.normal_(self.weight, std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight[:, : x.shape[1]], self.bias)


# Bumped whenever a SubnetNorm table is replaced (set_table, sync_offsets): compiled forward
# programs (see SuperResNet) hold views into the tables and are rebuilt when it changes.
TABLE_EPOCH = [0]


class SubnetNorm(nn.Module):
    """BatchNorm whose running statistics come from a per-SubNet table.

    Affine parameters are shared by all SubNets and sliced to the active channels. The table
    is ragged: row r stores only the channels SubNet r actually uses in this layer, packed in
    `stats` (2 x total; mean then variance) from `offsets[r]` (-1 when the SubNet skips the
    layer). The SuperNet keeps the SubNet id -> row map. In training mode, batch statistics
    are used and nothing is stored: SubNet statistics come from calibration.
    """

    def __init__(self, max_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(max_channels))
        self.bias = nn.Parameter(torch.zeros(max_channels))
        self.register_buffer("stats", torch.zeros(2, 0))
        self.register_buffer("offsets", torch.zeros(0, dtype=torch.int64))
        self._offsets: list[int] = []  # python mirror of `offsets`, read on the hot path
        # Calibration hook: when set, called with (module, input) in training-mode forwards.
        self.observer: Callable[["SubnetNorm", torch.Tensor], None] | None = None

    @property
    def max_channels(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor, row: int) -> torch.Tensor:
        c = x.shape[1]
        if self.training or row < 0:
            if self.observer is not None:
                self.observer(self, x)
            return F.batch_norm(x, None, None, self.weight[:c], self.bias[:c], True, 0.0, self.eps)
        off = self._offsets[row]
        if off < 0:
            raise RuntimeError(f"SubnetNorm has no statistics for row {row} in this layer")
        return F.batch_norm(
            x, self.stats[0, off:off + c], self.stats[1, off:off + c],
            self.weight[:c], self.bias[:c], False, 0.0, self.eps,
        )

    def set_table(self, rows: Sequence[tuple[torch.Tensor, torch.Tensor] | None]) -> None:
        """Replace the table (calibration time only, never when serving): one (mean, var)
        pair per row, or None for a SubNet that skips this layer."""
        offsets, means, variances, off = [], [], [], 0
        for entry in rows:
            if entry is None:
                offsets.append(-1)
                continue
            offsets.append(off)
            means.append(entry[0])
            variances.append(entry[1])
            off += entry[0].numel()
        self.stats = torch.stack([torch.cat(means), torch.cat(variances)]) if means else torch.zeros(2, 0)
        self.offsets = torch.tensor(offsets, dtype=torch.int64)
        self._offsets = offsets
        TABLE_EPOCH[0] += 1

    def sync_offsets(self) -> None:
        """Refresh the python mirror after `offsets` was loaded from a file."""
        self._offsets = self.offsets.tolist()
        TABLE_EPOCH[0] += 1

    def eval_args(self, row: int, channels: int,
                  prefix: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
                  detach: Callable[[torch.Tensor], torch.Tensor] = torch.Tensor.detach) -> tuple:
        """(weight, bias, mean, var, eps) of one SubNet's eval-mode normalisation: views of
        the shared affine (through ``prefix(tensor, n)``, which may share them between
        SubNets) and of the row's packed statistics (of ``detach(stats)``: a caller slicing
        many rows passes one shared detached base). No copy, nothing tracked by autograd."""
        off = self._offsets[row]
        if off < 0:
            raise RuntimeError(f"SubnetNorm has no statistics for row {row} in this layer")
        if prefix is None:
            prefix = lambda t, n: t.detach()[:n]  # noqa: E731
        s = detach(self.stats)
        return (prefix(self.weight, channels), prefix(self.bias, channels),
                s[0, off:off + channels], s[1, off:off + channels], self.eps)


class LayerSelect(nn.Module):
    """Runs the first `depth` blocks of a stage and passes the rest through (skips them)."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, depth: int, block_args: Sequence[tuple]) -> torch.Tensor:
        for i in range(depth):
            x = self.blocks[i](x, *block_args[i])
        return x
