"""What every imported OFA SuperNet shares: its spec, the plan cache behind actuation, and the
SubnetNorm table bookkeeping.

The serving worker, calibration and the bundle files talk to a SuperNet only through
``actuate(id)``, ``forward``, ``norm_modules()``, ``norm_rows`` / ``set_norm_rows`` and
``spec`` (in_channels, input_size, num_classes); this base class provides them for the
OFA families as ``SuperResNet`` does for superserve's own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import SubnetNorm
from ..resnet import UNCALIBRATED
from .ops import ElasticDepthwiseConv
from .space import MobileChoice, MobileSpace, ResNetChoice, ResNetSpace

FAMILY = "ofa"
ARCHS = ("resnet50", "mbv3-w1.0", "mbv3-w1.2", "proxyless")


@dataclass(frozen=True)
class OFASpec:
    """An OFA SuperNet: which architecture, its size parameters and its SubNet space."""

    arch: str
    num_classes: int = 1000
    input_size: int = 224  # what a served request carries (each SubNet resizes to its r)
    width_mult: float = 1.0  # MobileNet-like families only (ResNet widths are elastic)
    space: dict = field(default_factory=dict)  # the space's to_dict(); empty: OFA's published one
    in_channels: int = 3

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown OFA architecture {self.arch!r}; choose one of {', '.join(ARCHS)}")

    @property
    def subnet_space(self) -> ResNetSpace | MobileSpace:
        if self.arch == "resnet50":
            return ResNetSpace.from_dict(self.space) if self.space else ResNetSpace()
        if self.space:
            return MobileSpace.from_dict(self.space)
        if self.arch == "proxyless":
            return MobileSpace(num_stages=6, blocks_per_stage=(4, 4, 4, 4, 4, 1))
        return MobileSpace()

    def to_dict(self) -> dict[str, Any]:
        return {"family": FAMILY, "arch": self.arch, "num_classes": self.num_classes,
                "input_size": self.input_size, "width_mult": self.width_mult,
                "in_channels": self.in_channels, "space": self.subnet_space.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OFASpec":
        if d.get("family") != FAMILY:
            raise ValueError(f"not an OFA spec (family {d.get('family')!r})")
        return cls(arch=d["arch"], num_classes=int(d["num_classes"]), input_size=int(d["input_size"]),
                   width_mult=float(d["width_mult"]), space=dict(d["space"]), in_channels=int(d["in_channels"]))


class OFASuperNet(nn.Module):
    """Base of the OFA families: subclasses build modules and turn a SubNet into a plan."""

    def __init__(self, spec: OFASpec) -> None:
        super().__init__()
        self.spec = spec
        self.space = spec.subnet_space
        self.norm_rows: dict[str, int] = {}  # SubNet id -> row of every SubnetNorm table
        self._plans: dict[str, Any] = {}

    # --- subclasses ----------------------------------------------------------------------
    def build_plan(self, choice: ResNetChoice | MobileChoice, row: int) -> Any:
        raise NotImplementedError

    def ofa_names(self) -> dict[str, str]:
        """Own state-dict key -> the key of the same tensor in OFA's current module tree."""
        raise NotImplementedError

    def subnet_cost(self, choice: ResNetChoice | MobileChoice) -> tuple[int, int]:
        """(multiply-accumulates per image, parameters) of one SubNet."""
        raise NotImplementedError

    # --- actuation -----------------------------------------------------------------------
    def config_from_id(self, subnet_id: str) -> ResNetChoice | MobileChoice:
        return self.space.from_id(subnet_id)

    def plan(self, choice: ResNetChoice | MobileChoice) -> Any:
        choice = self.space.canonical(choice)
        cached = self._plans.get(choice.id)
        if cached is None:
            self.space.validate(choice)
            cached = self._plans[choice.id] = self.build_plan(choice, self.norm_rows.get(choice.id, UNCALIBRATED))
        return cached

    def actuate(self, choice: ResNetChoice | MobileChoice | str) -> Any:
        """Select the SubNet the next forward pass runs: for a prepared SubNet, one dict
        lookup and one attribute store."""
        plan = self._plans.get(choice) if isinstance(choice, str) else None
        if plan is None:
            plan = self.plan(self.space.from_id(choice) if isinstance(choice, str) else choice)
        self._active = plan
        return plan

    @property
    def active(self) -> Any:
        return self._active

    def _check_calibrated(self) -> None:
        if not self.training and self._active.norm_row == UNCALIBRATED:
            raise RuntimeError(f"SubNet {self._active.subnet_id} has no SubnetNorm statistics; calibrate it "
                               "first (superserve.supernet.calibrate) or actuate a calibrated SubNet")

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        """Elastic resolution: a SubNet of resolution r sees the request resized to r x r."""
        r = self._active.resolution
        if x.shape[-1] == r and x.shape[-2] == r:
            return x
        return F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)

    # --- weights and SubnetNorm table ----------------------------------------------------
    def derive_kernels(self) -> None:
        """Refresh the elastic kernels derived from the stored weights (after loading)."""
        for m in self.modules():
            if isinstance(m, ElasticDepthwiseConv):
                m.derive_kernels()

    def norm_modules(self) -> list[tuple[str, SubnetNorm]]:
        return [(n, m) for n, m in self.named_modules() if isinstance(m, SubnetNorm)]

    def set_norm_rows(self, subnet_ids: list[str]) -> None:
        self.norm_rows = {sid: r for r, sid in enumerate(subnet_ids)}
        active = self._active.subnet_id
        self._plans.clear()
        self.actuate(active)

    def weight_bytes(self) -> int:
        """Resident bytes of the weights: parameters plus the derived elastic kernels."""
        tensors = list(self.parameters()) + [b for n, b in self.named_buffers()
                                             if not n.endswith((".stats", ".offsets"))]
        return sum(t.numel() * t.element_size() for t in tensors)

    def norm_table_bytes(self) -> int:
        return sum(m.stats.nbytes + m.offsets.nbytes for _, m in self.norm_modules())
