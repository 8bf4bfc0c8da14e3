"""What the router knows about the served model, read without loading any tensor.

The router process never imports torch: it reads the SuperNet's spec from the weights
file's safetensors header and the SubNets from the latency profile.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from superserve.profiling.latency_profile import LatencyProfile
from superserve.serving.config import ServeConfig

WEIGHTS_FORMAT = "superserve-supernet/1"  # as superserve.supernet.checkpoint writes it


@dataclass(frozen=True)
class ModelInfo:
    name: str
    input_shape: tuple[int, int, int]  # C, H, W of one image
    num_classes: int
    profile: LatencyProfile  # the served SubNets, sorted by accuracy
    bundle: Path

    @property
    def input_elements(self) -> int:
        c, h, w = self.input_shape
        return c * h * w

    @property
    def input_bytes(self) -> int:
        return 4 * self.input_elements  # float32

    @property
    def output_bytes(self) -> int:
        return 4 * self.num_classes

    @property
    def subnet_ids(self) -> list[str]:
        return [s.id for s in self.profile.subnets]


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The __metadata__ of a safetensors file: an 8-byte little-endian header length, then
    a JSON header. Reading it directly keeps torch out of the router."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            raise ValueError(f"{path}: not a safetensors file (header length {n})")
        header = json.loads(f.read(n))
    return header.get("__metadata__") or {}


def read_model_info(config: ServeConfig) -> ModelInfo:
    bundle = Path(config.bundle)
    weights = bundle / "weights.safetensors"
    if not weights.exists():
        raise FileNotFoundError(
            f"no SuperNet bundle at {bundle} (weights.safetensors missing); pass --bundle DIR with "
            "weights.safetensors, subnetnorm.safetensors and profile.json (see superserve/embedded.py)")
    if not (bundle / "subnetnorm.safetensors").exists():
        raise FileNotFoundError(f"{bundle}: subnetnorm.safetensors missing (SubnetNorm statistics)")
    meta = read_safetensors_metadata(weights)
    if meta.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{weights}: format {meta.get('format')!r}, expected {WEIGHTS_FORMAT!r}")
    spec = json.loads(meta["spec"])
    profile = LatencyProfile.load(config.profile_path)
    if config.subnets:
        profile = profile.subset(config.subnets)
    return ModelInfo(
        name=config.model_name,
        input_shape=(int(spec.get("in_channels", 1)), int(spec.get("input_size", 28)),
                     int(spec.get("input_size", 28))),
        num_classes=int(spec.get("num_classes", 10)),
        profile=profile,
        bundle=bundle,
    )
