"""Request bodies prepared ahead of a run: real labelled images, encoded once.

Encoding on the hot path would make the client's own cost depend on the payload; encoding
ahead keeps a send down to one write of a ready ``bytes`` object. Request ``i`` of a trace
carries image ``i mod n``, so a trace longer than the subset cycles through it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from safetensors import safe_open

from superserve.bundle_layout import EMBEDDED, FMNIST_MEAN, FMNIST_STD, SUBSET_FORMAT, BundleLayout
from superserve.loadgen.kserve import encode_binary_request

# The default input normalisation (Fashion-MNIST's, the embedded SuperNet's); a bundle's own is
# in its data.json (BundleLayout.data_info), read without torch.
_MEAN, _STD = FMNIST_MEAN, FMNIST_STD


@dataclass
class PayloadSet:
    """Ready-to-send infer bodies plus the label of the image each one carries."""

    bodies: list[bytes]
    header_lengths: list[int]
    labels: np.ndarray  # int64, one per body
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.bodies)

    def label_of(self, request_index: np.ndarray) -> np.ndarray:
        return self.labels[np.asarray(request_index) % len(self.labels)]


def normalize_images(images_u8: np.ndarray, mean: Sequence[float] = (_MEAN,),
                     std: Sequence[float] = (_STD,)) -> np.ndarray:
    """uint8 N x H x W (or N x C x H x W) -> float32 N x C x H x W, as the server's model
    expects: (pixel / 255 - mean[c]) / std[c]."""
    x = images_u8.astype(np.float32) / 255.0
    if x.ndim == 3:
        x = x[:, None, :, :]
    if len(mean) == 1:
        x = (x - mean[0]) / std[0]
    else:
        x = (x - np.asarray(mean, np.float32)[None, :, None, None]) / np.asarray(std, np.float32)[None, :, None, None]
    return x.astype(np.float32, copy=False)


def build_payloads(images_u8: np.ndarray, labels: np.ndarray, *, slo_ms: float | None,
                   input_name: str = "input", extra_parameters: Mapping[str, Any] | None = None,
                   limit: int | None = None, outputs: Sequence[str] | None = None,
                   mean: Sequence[float] = (_MEAN,), std: Sequence[float] = (_STD,)) -> PayloadSet:
    """One binary-extension body per image: shape [1, C, H, W], FP32, normalised with
    ``mean``/``std`` (per channel; the bundle's). ``outputs``: output names to ask for (e.g.
    ["class_index"]: a short answer); None: all."""
    images_u8 = np.asarray(images_u8)
    labels = np.asarray(labels, dtype=np.int64)
    if limit is not None:
        images_u8, labels = images_u8[:limit], labels[:limit]
    if images_u8.ndim not in (3, 4) or images_u8.shape[0] != labels.shape[0] or not len(labels):
        raise ValueError("expected uint8 N x H x W (or N x C x H x W) images with N >= 1 labels")
    params: dict[str, Any] = dict(extra_parameters or {})
    if slo_ms is not None:
        params["slo_ms"] = float(slo_ms)
    x = normalize_images(images_u8, mean, std)
    bodies, heads = [], []
    for k in range(x.shape[0]):
        body, head = encode_binary_request(x[k:k + 1], input_name=input_name, parameters=params, outputs=outputs)
        bodies.append(body)
        heads.append(head)
    return PayloadSet(bodies, heads, labels, {"images": int(x.shape[0]), "input_name": input_name,
                                              "parameters": params, "encoding": "kserve-v2-binary",
                                              "outputs": list(outputs or [])})


def payloads_from_bundle(root: str | Path | None, *, slo_ms: float | None, input_name: str = "input",
                         limit: int | None = None, outputs: Sequence[str] | None = None) -> PayloadSet:
    """Payloads from a bundle's labelled subset (default: the embedded bundle), normalised
    with the bundle's own mean and std (its data.json; Fashion-MNIST's without one)."""
    layout = BundleLayout(root) if root is not None else EMBEDDED
    path = layout.subset
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: give --bundle DIR of a SuperNet bundle with a labelled subset")
    info = layout.data_info()
    images, labels = read_subset(path)
    p = build_payloads(images, labels, slo_ms=slo_ms, input_name=input_name, limit=limit, outputs=outputs,
                       mean=info.mean, std=info.std)
    p.meta["source"] = str(path)
    p.meta["normalisation"] = {"mean": list(info.mean), "std": list(info.std)}
    return p


def read_subset(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 N x H x W or N x C x H x W images, N labels) of a bundle's subset file, read without torch."""
    with safe_open(str(path), framework="numpy") as f:
        fmt = (f.metadata() or {}).get("format")
        if fmt != SUBSET_FORMAT:
            raise ValueError(f"{path}: format {fmt!r}, expected {SUBSET_FORMAT!r} (wrong file?)")
        images, labels = f.get_tensor("images"), f.get_tensor("labels")
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[0] != labels.shape[0]:
        raise ValueError(f"{path}: expected uint8 N x H x W (or N x C x H x W) images with N labels")
    return images, labels
