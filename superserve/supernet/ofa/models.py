"""Build the SuperNet an OFA spec describes."""
from __future__ import annotations

from .base import OFASpec, OFASuperNet
from .mobilenet import OFAMobileNet
from .resnet import OFAResNet50

WIDTH_MULT = {"resnet50": 1.0, "mbv3-w1.0": 1.0, "mbv3-w1.2": 1.2, "proxyless": 1.3}


def ofa_spec(arch: str, num_classes: int = 1000, input_size: int = 224, resolutions: tuple[int, ...] = ()
             ) -> OFASpec:
    """The published space of ``arch`` (optionally with elastic resolutions to serve)."""
    spec = OFASpec(arch=arch, num_classes=num_classes, input_size=input_size, width_mult=WIDTH_MULT.get(arch, 1.0))
    space = spec.subnet_space.to_dict()
    space["resolutions"] = list(resolutions or (input_size,))
    return OFASpec(arch=arch, num_classes=num_classes, input_size=input_size, width_mult=spec.width_mult,
                   space=space)


def build_ofa(spec: OFASpec) -> OFASuperNet:
    return OFAResNet50(spec) if spec.arch == "resnet50" else OFAMobileNet(spec)
