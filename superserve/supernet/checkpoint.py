"""Weights and SubnetNorm tables on disk, in safetensors (no pickle anywhere on the load path).

Errors name the file, the key and the shapes involved, and say what to do.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..bundle_layout import NORM_FORMAT, WEIGHTS_FORMAT
from .config import SuperNetSpec
from .ofa.base import FAMILY as OFA_FAMILY
from .ofa.base import OFASpec, OFASuperNet
from .ofa.models import build_ofa
from .resnet import SuperResNet
from .vit.model import SuperTransformer
from .vit.space import FAMILIES as TRANSFORMER_FAMILIES
from .vit.space import TransformerSpec


class CheckpointError(ValueError):
    """A weights or statistics file is missing, damaged or does not match the model."""


def read_safetensors(path: str | Path, expected_format: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {exc}") from None
    if meta.get("format") != expected_format:
        raise CheckpointError(
            f"{path}: format {meta.get('format')!r}, expected {expected_format!r} (wrong file?)")
    return tensors, meta


def load_into(module: nn.Module, tensors: dict[str, torch.Tensor], path: str | Path,
              keys: set[str] | None = None) -> None:
    """Copy tensors into module's state, refusing missing, unexpected or mis-shaped keys."""
    state = module.state_dict()
    wanted = set(state) if keys is None else keys
    missing = sorted(wanted - set(tensors))
    if missing:
        raise CheckpointError(f"{path}: missing key {missing[0]!r} (and {len(missing) - 1} more)")
    unexpected = sorted(set(tensors) - wanted)
    if unexpected:
        raise CheckpointError(f"{path}: unexpected key {unexpected[0]!r}; was it saved from another architecture?")
    for k in sorted(wanted):
        if tuple(state[k].shape) != tuple(tensors[k].shape):
            raise CheckpointError(
                f"{path}: key {k!r} has shape {tuple(tensors[k].shape)}, the model expects "
                f"{tuple(state[k].shape)}; the file was saved from a different SuperNet spec")
    with torch.no_grad():
        for k in wanted:
            state[k].copy_(tensors[k])


def _weight_keys(model: nn.Module) -> set[str]:
    return {k for k in model.state_dict() if not k.endswith((".stats", ".offsets"))}


def save_weights(model: SuperResNet | OFASuperNet, path: str | Path, extra_meta: dict | None = None) -> None:
    state = model.state_dict()
    tensors = {k: state[k].contiguous() for k in _weight_keys(model)}
    meta = {"format": WEIGHTS_FORMAT, "spec": json.dumps(model.spec.to_dict())}
    meta.update({k: str(v) for k, v in (extra_meta or {}).items()})
    save_file(tensors, str(path), metadata=meta)


def save_norm_table(model: SuperResNet | OFASuperNet, path: str | Path) -> None:
    ids = sorted(model.norm_rows, key=model.norm_rows.get)
    tensors = {}
    for name, mod in model.norm_modules():
        tensors[f"{name}.stats"] = mod.stats.contiguous()
        tensors[f"{name}.offsets"] = mod.offsets.contiguous()
    save_file(tensors, str(path), metadata={"format": NORM_FORMAT, "subnet_ids": json.dumps(ids)})


def load_norm_table(model: SuperResNet | OFASuperNet, path: str | Path) -> list[str]:
    tensors, meta = read_safetensors(path, NORM_FORMAT)
    ids = json.loads(meta["subnet_ids"])
    norms = model.norm_modules()
    for name, mod in norms:  # ragged tables: adopt the file's shapes, then copy
        for key in ("stats", "offsets"):
            if f"{name}.{key}" not in tensors:
                raise CheckpointError(f"{path}: missing key {name}.{key!r}")
            setattr(mod, key, torch.empty_like(tensors[f"{name}.{key}"]))
    keys = {f"{n}.{k}" for n, _ in norms for k in ("stats", "offsets")}
    load_into(model, tensors, path, keys)
    for name, mod in norms:
        mod.sync_offsets()
        if len(mod._offsets) != len(ids) or mod.stats.shape[0] != 2:
            raise CheckpointError(f"{path}: table of {name} has {len(mod._offsets)} rows, "
                                  f"the file lists {len(ids)} SubNets")
        if max(mod._offsets, default=-1) > mod.stats.shape[1]:
            raise CheckpointError(f"{path}: offsets of {name} point past its statistics")
    model.set_norm_rows(ids)
    return ids


def load_supernet(weights: str | Path, norm_table: str | Path | None = None
                  ) -> SuperResNet | OFASuperNet | SuperTransformer:
    """Build the SuperNet described by the weights file (superserve's own family, an
    imported OFA one, or a transformer (ViT, BERT) when the spec names that family), load its weights and, if given, its
    SubnetNorm table. Returns the model in eval mode."""
    tensors, meta = read_safetensors(weights, WEIGHTS_FORMAT)
    spec = json.loads(meta["spec"])
    if spec.get("family") == OFA_FAMILY:
        model = build_ofa(OFASpec.from_dict(spec))
        load_into(model, tensors, weights, _weight_keys(model))
        model.derive_kernels()
    elif spec.get("family") in TRANSFORMER_FAMILIES:
        model = SuperTransformer(TransformerSpec.from_dict(spec))
        load_into(model, tensors, weights, _weight_keys(model))
    else:
        model = SuperResNet(SuperNetSpec.from_dict(spec))
        load_into(model, tensors, weights, _weight_keys(model))
    if norm_table is not None:
        load_norm_table(model, norm_table)
    return model.eval()
