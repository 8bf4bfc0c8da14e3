"""Read a Once-for-All checkpoint into a SubNetAct SuperNet.

OFA saves ``{"state_dict": ...}`` with ``torch.save``. It is read here with
``torch.load(weights_only=True)`` (plain tensors only: no pickled code runs). OFA renamed its
modules over time (``mobile_inverted_conv`` became ``conv``; dynamic layers wrap a plain
layer, so ``bn.weight`` became ``bn.bn.weight``); every spelling is brought to the flat,
legacy one before matching. BatchNorm running statistics are not imported: they belong to
the full network, and SubnetNorm recalibrates every served SubNet.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import CheckpointError
from .base import OFASuperNet
from .models import build_ofa, ofa_spec

_RENAMES = ((".mobile_inverted_conv.", ".conv."), (".bn.bn.", ".bn."), (".conv.conv.weight", ".conv.weight"),
            (".linear.linear.", ".linear."))
_NOT_IMPORTED = ("running_mean", "running_var", "num_batches_tracked")


def flat_key(key: str) -> str:
    """An OFA state-dict key in its flat (legacy) spelling."""
    key = key.removeprefix("module.")  # saved from a DataParallel wrapper
    for old, new in _RENAMES:
        key = key.replace(old, new)
    return key


def read_ofa_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of an OFA checkpoint file, keyed by flat name (no pickle: weights_only)."""
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
    flat: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.endswith(_NOT_IMPORTED):
            continue
        name = flat_key(key)
        if name in flat:
            raise CheckpointError(f"{path}: keys {key!r} and another one both mean {name!r}")
        flat[name] = tensor
    return flat


def load_ofa_state(model: OFASuperNet, tensors: dict[str, torch.Tensor], source: str | Path) -> None:
    """Copy flat-named OFA tensors into ``model``, refusing missing, unexpected or mis-shaped ones."""
    names = model.ofa_names()
    wanted = set(names.values())
    missing = sorted(wanted - set(tensors))
    if missing:
        raise CheckpointError(f"{source}: missing {missing[0]!r} (and {len(missing) - 1} more); is --arch "
                              f"{model.spec.arch} the architecture this checkpoint was trained as?")
    unexpected = sorted(set(tensors) - wanted)
    if unexpected:
        raise CheckpointError(f"{source}: unexpected {unexpected[0]!r} (and {len(unexpected) - 1} more); is --arch "
                              f"{model.spec.arch} the architecture this checkpoint was trained as?")
    state = model.state_dict()
    for ours, theirs in names.items():
        if tuple(state[ours].shape) != tuple(tensors[theirs].shape):
            raise CheckpointError(f"{source}: {theirs!r} has shape {tuple(tensors[theirs].shape)}, "
                                  f"{model.spec.arch} expects {tuple(state[ours].shape)}")
    with torch.no_grad():
        for ours, theirs in names.items():
            state[ours].copy_(tensors[theirs])
    model.derive_kernels()


def import_checkpoint(path: str | Path, arch: str, input_size: int = 224,
                      resolutions: tuple[int, ...] = ()) -> OFASuperNet:
    """An OFA checkpoint as a SubNetAct SuperNet (eval mode, not yet calibrated). The number
    of classes is read from the classifier."""
    tensors = read_ofa_checkpoint(path)
    classifier = tensors.get("classifier.linear.weight")
    if classifier is None or classifier.ndim != 2:
        raise CheckpointError(f"{path}: no classifier.linear.weight; not an OFA SuperNet checkpoint")
    model = build_ofa(ofa_spec(arch, int(classifier.shape[0]), input_size, resolutions))
    load_ofa_state(model, tensors, path)
    return model.eval()
