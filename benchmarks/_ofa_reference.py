"""The reference implementation for the OFA importer: MIT Han Lab's `ofa` package (PyPI, code
only: it is built here with random weights, ``pretrained=False``, nothing is downloaded).

`ofa` imports torchvision (data transforms) and gdown (downloads) at import time, though
building, running and extracting SuperNets needs neither; PyPI's torchvision for our torch
does not import on the CPU build. Where they cannot be imported, empty stand-ins are put in
``sys.modules`` before `ofa` is imported (the test extra installs `ofa` with --no-deps).

Used by tests/test_ofa_import.py and benchmarks/ofa.py, which compare superserve's SuperNet
with `ofa`'s dynamic forward (``set_active_subnet``) and its extraction
(``get_active_subnet``), BatchNorm statistics recalibrated on both sides from the same batch:
`ofa` with its own ``set_running_statistics``, superserve with SubnetNorm calibration.
"""
from __future__ import annotations

import contextlib
import importlib
import random
import sys
import types
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F

# The constructor arguments of OFA's published SuperNets (ofa.model_zoo.ofa_net) per --arch.
ZOO_ARGUMENTS = {
    "resnet50": ("OFAResNets", dict(dropout_rate=0, depth_list=[0, 1, 2], expand_ratio_list=[0.2, 0.25, 0.35],
                                    width_mult_list=[0.65, 0.8, 1.0])),
    "mbv3-w1.0": ("OFAMobileNetV3", dict(dropout_rate=0, width_mult=1.0, ks_list=[3, 5, 7],
                                         expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])),
    "mbv3-w1.2": ("OFAMobileNetV3", dict(dropout_rate=0, width_mult=1.2, ks_list=[3, 5, 7],
                                         expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])),
    "proxyless": ("OFAProxylessNASNets", dict(dropout_rate=0, width_mult=1.3, ks_list=[3, 5, 7],
                                              expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])),
}


class _StandIn(types.ModuleType):
    """A module whose every attribute is an empty class (enough for `ofa`'s imports and the
    base classes of its data transforms, which the comparison never runs)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = type(name, (), {})
        setattr(self, name, value)
        return value


def _stand_in(name: str, submodules: tuple[str, ...] = ()) -> None:
    try:
        importlib.import_module(name)
        return
    except Exception:  # missing, or (torchvision on CPU torch) failing inside its own import
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
    root = sys.modules[name] = _StandIn(name)
    for sub in submodules:
        parent, mod = root, None
        for i, part in enumerate(sub.split(".")):
            full = ".".join([name] + sub.split(".")[:i + 1])
            mod = sys.modules.get(full) or _StandIn(full)
            sys.modules[full] = mod
            setattr(parent, part, mod)
            parent = mod


def import_ofa() -> types.ModuleType:
    """`ofa.model_zoo` and friends, importable on this torch."""
    _stand_in("torchvision", ("transforms", "transforms.functional", "datasets"))
    _stand_in("gdown")
    zoo = importlib.import_module("ofa.model_zoo")
    importlib.import_module("ofa.imagenet_classification.elastic_nn.utils")
    return zoo


def reference_net(arch: str, n_classes: int = 1000, seed: int = 0) -> torch.nn.Module:
    """OFA's published SuperNet of ``arch`` (the model zoo's constructor arguments; any
    number of classes) with random weights, perturbed so that nothing is left at an
    identity or a constant: BatchNorm affine parameters, the kernel transform matrices and
    squeeze-excite biases. Then the middle channels are sorted by importance as OFA's
    training leaves them (``re_organize_middle_weights``)."""
    zoo = import_ofa()
    cls_name, arguments = ZOO_ARGUMENTS[arch]
    torch.manual_seed(seed)
    net = getattr(zoo, cls_name)(n_classes=n_classes, **arguments)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("_matrix"):
                p.add_(0.1 * torch.randn_like(p))
            elif p.ndim == 1 and ".bn." in name and name.endswith("weight"):
                p.copy_(0.5 + torch.rand_like(p))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn_like(p))
    net.re_organize_middle_weights()
    return net.eval()


def write_checkpoint(net: torch.nn.Module, path: Path, legacy: bool = False) -> None:
    """Save as OFA does (``{"state_dict": ...}``); ``legacy`` spells keys as OFA's released
    MobileNet checkpoints do (``mobile_inverted_conv``, un-nested dynamic layers)."""
    state = net.state_dict()
    if legacy:
        renamed = {}
        for k, v in state.items():
            k = k.replace(".bn.bn.", ".bn.").replace(".conv.conv.weight", ".conv.weight")
            k = k.replace(".linear.linear.", ".linear.")
            if k.startswith("blocks.") and ".conv." in k:
                k = k.replace(".conv.", ".mobile_inverted_conv.", 1)
            renamed[k] = v
        state = renamed
    torch.save({"state_dict": state}, str(path))


def resized(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images at a SubNet's resolution, resized as superserve's SuperNet resizes its input."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


@torch.no_grad()
def reference_outputs(net: torch.nn.Module, arguments: dict, resolution: int, calib: torch.Tensor,
                      x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(dynamic forward, extracted forward) of one SubNet of the reference on ``x``, after
    OFA's own BatchNorm recalibration on ``calib`` resized to the SubNet's resolution (as
    superserve's SuperNet resizes its input)."""
    utils = importlib.import_module("ofa.imagenet_classification.elastic_nn.utils")
    net.set_active_subnet(**arguments)
    utils.set_running_statistics(net, [(resized(calib, resolution), None)])
    net.eval()
    dynamic = net(x)
    extracted = net.get_active_subnet(preserve_weight=True).eval()(x)
    return dynamic, extracted


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Build and run everything in ``dtype`` (`ofa`'s extraction creates new layers in the
    default dtype)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@torch.no_grad()
def equivalence(arch: str, workdir: Path, samples: int = 20, resolutions: tuple[int, ...] = (24, 32),
                batch: int = 2, calib_images: int = 4, seed: int = 0, dtype: torch.dtype = torch.float64) -> dict:
    """Import a random reference SuperNet through an OFA-format checkpoint and compare
    ``samples`` seeded random SubNets plus the smallest and the largest: superserve's
    SuperNet and its extraction vs `ofa`'s dynamic forward and its extraction.

    In float64 by default: random-weight networks evaluated on tiny calibration batches are
    ill-conditioned, and ``reference_sensitivity`` (how far the reference's own output moves
    when its input is scaled by 1 + 1e-7 noise, about one float32 rounding) exceeds 1e-4 for
    ResNet-50, so a float32 comparison would measure rounding, not the implementations;
    float64 shows their difference itself."""
    from superserve.supernet import calibrate
    from superserve.supernet.ofa.extract import extract_ofa
    from superserve.supernet.ofa.importer import import_checkpoint

    with default_dtype(dtype):
        net = reference_net(arch, seed=seed)
        path = Path(workdir) / f"ofa_{arch}.pth"
        write_checkpoint(net, path, legacy=True)
        model = import_checkpoint(path, arch, max(resolutions), resolutions)
        space, rng, pick = model.space, torch.Generator().manual_seed(seed), random.Random(seed)
        configs = {c.id: c for c in (space.smallest(), space.largest())}
        while len(configs) < samples + 2:
            c = space.sample(pick)
            configs.setdefault(c.id, c)
        calib = torch.randn(calib_images, 3, max(resolutions), max(resolutions), generator=rng)
        calibrate(model, list(configs.values()), lambda: [calib])
        model.eval()
        worst = {"vs_ofa_forward": 0.0, "vs_ofa_extraction": 0.0, "extracted_vs_ofa_extraction": 0.0}
        scale = sensitivity = 0.0
        for c in configs.values():
            x = resized(calib[:batch], c.r)  # in distribution: random weights stay well scaled
            model.actuate(c.id)
            ours = model(x)
            ours_extracted = extract_ofa(model, c.id)(x)
            dynamic, extracted = reference_outputs(net, c.ofa_arguments(), c.r, calib, x)
            worst["vs_ofa_forward"] = max(worst["vs_ofa_forward"], float((ours - dynamic).abs().max()))
            worst["vs_ofa_extraction"] = max(worst["vs_ofa_extraction"], float((ours - extracted).abs().max()))
            worst["extracted_vs_ofa_extraction"] = max(worst["extracted_vs_ofa_extraction"],
                                                       float((ours_extracted - extracted).abs().max()))
            nudged = net(x * (1 + 1e-7 * torch.randn(x.shape, generator=rng)))
            sensitivity = max(sensitivity, float((nudged - dynamic).abs().max()))
            scale = max(scale, float(dynamic.abs().max()))
    return {"subnets_checked": len(configs), "max_abs_diff": worst, "max_abs_output": scale,
            "reference_sensitivity": sensitivity, "dtype": str(dtype).removeprefix("torch."),
            "resolutions": list(resolutions), "batch": batch, "calibration_images": calib_images}
