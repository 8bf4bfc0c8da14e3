"""What the router knows about the served model, read without loading any tensor.

The router process never imports torch: it reads the SuperNet's spec from the weights
file's safetensors metadata (``safe_open`` with the numpy framework reads the header only)
and the SubNets from the latency profile.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open

from superserve.bundle_layout import WEIGHTS_FORMAT, BundleLayout, DataInfo
from superserve.device import check_device, cuda_device_count, gpu_ids
from superserve.scheduling.profile import LatencyProfile
from superserve.serving.config import ServeConfig


@dataclass(frozen=True)
class ModelInfo:
    name: str
    input_shape: tuple[int, int, int]  # C, H, W of one image
    num_classes: int
    profile: LatencyProfile  # the served SubNets, sorted by accuracy
    bundle: Path
    device: str = "cpu"  # the --device setting: cpu, cuda or cuda:N
    gpus: tuple[int, ...] = ()  # the GPUs the workers use (round-robin); () on cpu
    data: DataInfo | None = None  # the bundle's data.json (normalisation, classes); None: it has none
    input_datatype: str = "FP32"  # "INT64": token ids (BERT), input_shape (1, 1, L); else images
    vocab_size: int = 0  # INT64 inputs: ids must lie in [0, vocab_size)

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
    """The __metadata__ of a safetensors file, without reading its tensors (or importing torch)."""
    try:
        with safe_open(str(path), framework="numpy") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from None


def read_model_info(config: ServeConfig) -> ModelInfo:
    dev = check_device(config.device)  # DeviceError (a ValueError) naming it if unusable here
    gpus = gpu_ids(dev, cuda_device_count()) if dev.is_cuda else ()
    layout = BundleLayout(config.bundle)
    if not layout.weights.exists():
        raise FileNotFoundError(
            f"no SuperNet bundle at {layout.root} ({layout.weights.name} missing); pass --bundle DIR with "
            f"{layout.weights.name}, {layout.norm.name} and {layout.profile.name} (see superserve/bundle_layout.py)")
    if not layout.norm.exists():
        raise FileNotFoundError(f"{layout.root}: {layout.norm.name} missing (SubnetNorm statistics)")
    meta = read_safetensors_metadata(layout.weights)
    if meta.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{layout.weights}: format {meta.get('format')!r}, expected {WEIGHTS_FORMAT!r}")
    spec = json.loads(meta["spec"])
    profile = LatencyProfile.load(config.profile_path)
    if config.subnets:
        profile = profile.subset(config.subnets)
    input_shape = (int(spec.get("in_channels", 1)), int(spec.get("input_size", 28)), int(spec.get("input_size", 28)))
    tokens = spec.get("family") == "bert"  # token ids travel as float32 (exact below 2^24) in the slabs
    if tokens:
        input_shape = (1, 1, int(spec["seq_len"]))
    data = DataInfo.load(layout.data) if layout.data.exists() else None
    if data is not None and data.input_shape != input_shape:
        raise ValueError(f"{layout.data}: input_shape {list(data.input_shape)} but the SuperNet takes "
                         f"{list(input_shape)} ({layout.weights.name})")
    return ModelInfo(
        name=config.model_name,
        input_shape=input_shape,
        num_classes=int(spec.get("num_classes", 10)),
        profile=profile,
        bundle=layout.root,
        device=str(dev),
        gpus=gpus,
        data=data,
        input_datatype="INT64" if tokens else "FP32",
        vocab_size=int(spec.get("vocab_size", 0)) if tokens else 0,
    )
