"""Read a Once-for-All checkpoint into a SubNetAct SuperNet.

OFA saves ``{"state_dict": ...}`` with ``torch.save``. It is read here with
``torch.load(weights_only=True)`` (plain tensors only: no pickled code runs). OFA renamed its
modules over time (``mobile_inverted_conv`` became ``conv``; dynamic layers wrap a plain
layer, so ``bn.weight`` became ``bn.bn.weight``); every key is matched to the current
spelling the way OFA's own ``load_state_dict`` does it, against the keys the architecture has. BatchNorm running statistics are not imported: they belong to
the full network, and SubnetNorm recalibrates every served SubNet.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import CheckpointError
from .base import OFASuperNet
from .models import build_ofa, ofa_spec

# OFA's own loaders try these respellings, in this order, for a key the model does not have:
# un-nested dynamic layers of old checkpoints, and the reverse.
_RESPELLINGS = ((".linear.", ".linear.linear."), ("bn.", "bn.bn."), ("conv.weight", "conv.conv.weight"),
                (".bn.bn.", ".bn."), (".conv.conv.weight", ".conv.weight"), (".linear.linear.", ".linear."))
_NOT_IMPORTED = ("running_mean", "running_var", "num_batches_tracked")


def read_ofa_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of an OFA checkpoint file, without BatchNorm running statistics (no
    pickle: weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        blob = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged or pickled-code files
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint of plain tensors ({exc})") from None
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a dict with a 'state_dict' of tensors (OFA's format)")
    return {k: v for k, v in state.items() if not k.endswith(_NOT_IMPORTED)}


def current_key(key: str, known: set[str]) -> str | None:
    """The current OFA spelling (one of ``known``) of a checkpoint key, or None."""
    key = key.removeprefix("module.").replace(".mobile_inverted_conv.", ".conv.")
    if key in known:
        return key
    for old, new in _RESPELLINGS:
        if old in key and key.replace(old, new) in known:
            return key.replace(old, new)
    return None


def load_ofa_state(model: OFASuperNet, tensors: dict[str, torch.Tensor], source: str | Path) -> None:
    """Copy an OFA checkpoint's tensors into ``model``, refusing missing, unexpected,
    ambiguous or mis-shaped ones."""
    names = model.ofa_names()
    known = set(names.values())
    found: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        name = current_key(key, known)
        if name is None:
            raise CheckpointError(f"{source}: unexpected {key!r}; is --arch {model.spec.arch} the architecture "
                                  "this checkpoint was trained as?")
        if name in found:
            raise CheckpointError(f"{source}: two keys mean {name!r}")
        found[name] = tensor
    missing = sorted(known - set(found))
    if missing:
        raise CheckpointError(f"{source}: missing {missing[0]!r} (and {len(missing) - 1} more); is --arch "
                              f"{model.spec.arch} the architecture this checkpoint was trained as?")
    state = model.state_dict()
    for ours, theirs in names.items():
        if tuple(state[ours].shape) != tuple(found[theirs].shape):
            raise CheckpointError(f"{source}: {theirs!r} has shape {tuple(found[theirs].shape)}, "
                                  f"{model.spec.arch} expects {tuple(state[ours].shape)}")
    with torch.no_grad():
        for ours, theirs in names.items():
            state[ours].copy_(found[theirs])
    model.derive_kernels()


def import_checkpoint(path: str | Path, arch: str, input_size: int = 224,
                      resolutions: tuple[int, ...] = ()) -> OFASuperNet:
    """An OFA checkpoint as a SubNetAct SuperNet (eval mode, not yet calibrated). The number
    of classes is read from the classifier."""
    tensors = read_ofa_checkpoint(path)
    classifier = next((v for k, v in tensors.items() if k.removeprefix("module.").startswith("classifier.")
                       and k.endswith("weight")), None)
    if classifier is None or classifier.ndim != 2:
        raise CheckpointError(f"{path}: no classifier weight; not an OFA SuperNet checkpoint")
    model = build_ofa(ofa_spec(arch, int(classifier.shape[0]), input_size, resolutions))
    load_ofa_state(model, tensors, path)
    return model.eval()
