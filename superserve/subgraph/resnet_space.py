"""The boxes of the embedded conv SuperNet (``superserve.supernet.SuperResNet``).

Derived from how its operators slice: WeightSlice reads ``weight[:out, :in]`` of each conv
(``in`` = the channels of the input it receives), norms read their first ``c`` affine
parameters, LayerSelect runs the first D blocks of a stage (the rest read nothing), the
classifier reads its first ``in`` columns and its whole bias. Tensor names are the model's
parameter names, so a box can be checked against the real slices (tests do).
"""
from __future__ import annotations

import numpy as np

from superserve.scheduling.profile import LatencyProfile
from superserve.subgraph.catalog import Catalog
from superserve.subgraph.space import TensorSpec, WeightSpace
from superserve.supernet.config import SubNetConfig, SuperNetSpec, active_channels


def _out_size(size: int, k: int, stride: int) -> int:
    return (size + 2 * (k // 2) - k) // stride + 1


def resnet_space(spec: SuperNetSpec, element_bytes: int = 4) -> WeightSpace:
    """Every parameter of the SuperNet at its max shape, in execution order."""
    tensors: list[TensorSpec] = []

    def conv(name: str, cout: int, cin: int, k: int, out_hw: int, norm: str | None) -> None:
        tensors.append(TensorSpec(f"{name}.weight", (cout, cin, k, k), name, out_hw * out_hw))
        if norm is not None:
            tensors.append(TensorSpec(f"{norm}.weight", (cout,), name))
            tensors.append(TensorSpec(f"{norm}.bias", (cout,), name))

    size = _out_size(spec.input_size, 3, spec.stem_stride)
    conv("stem_conv", spec.stem_channels, spec.in_channels, 3, size, "stem_bn")
    if spec.stem_pool:
        size = _out_size(size, 3, 2)
    cin = spec.stem_channels
    for m, (c, s) in enumerate(zip(spec.stage_channels, spec.stage_strides)):
        mid = spec.max_mid(m)
        for i in range(spec.max_depth):
            p = f"stages.{m}.blocks.{i}"
            block_in = cin if i == 0 else c
            out_size = _out_size(size, 3, s if i == 0 else 1)
            conv(f"{p}.conv1", mid, block_in, 1, size, f"{p}.bn1")
            conv(f"{p}.conv2", mid, mid, 3, out_size, f"{p}.bn2")
            conv(f"{p}.conv3", c, mid, 1, out_size, f"{p}.bn3")
            if i == 0:
                conv(f"{p}.down_conv", c, block_in, 1, out_size, f"{p}.down_bn")
            size = out_size
        cin = c
    tensors.append(TensorSpec("classifier.weight", (spec.num_classes, cin), "classifier", 1))
    tensors.append(TensorSpec("classifier.bias", (spec.num_classes,), "classifier"))
    return WeightSpace("embedded-resnet", tensors, element_bytes)


def resnet_extents(spec: SuperNetSpec, config: SubNetConfig) -> dict[str, tuple[int, ...]]:
    """Tensor name -> the extents ``config`` reads (tensors it skips are absent)."""
    spec.validate(config)
    ext: dict[str, tuple[int, ...]] = {}

    def conv(name: str, cout: int, cin: int, k: int, norm: str | None) -> None:
        ext[f"{name}.weight"] = (cout, cin, k, k)
        if norm is not None:
            ext[f"{norm}.weight"] = ext[f"{norm}.bias"] = (cout,)

    stem = active_channels(spec.stem_channels, config.width)
    conv("stem_conv", stem, spec.in_channels, 3, "stem_bn")
    cin = stem
    for m, c in enumerate(spec.stage_channels):
        out = active_channels(c, config.width)
        for i, e in enumerate(config.expands[m]):
            p, mid = f"stages.{m}.blocks.{i}", active_channels(out, e)
            conv(f"{p}.conv1", mid, cin, 1, f"{p}.bn1")
            conv(f"{p}.conv2", mid, mid, 3, f"{p}.bn2")
            conv(f"{p}.conv3", out, mid, 1, f"{p}.bn3")
            if i == 0:
                conv(f"{p}.down_conv", out, cin, 1, f"{p}.down_bn")
            cin = out
    ext["classifier.weight"] = (spec.num_classes, cin)
    ext["classifier.bias"] = (spec.num_classes,)
    return ext


def norm_stat_elements(extents: dict[str, tuple[int, ...]]) -> int:
    """SubnetNorm's private statistics of one SubNet: a mean and a variance per channel of
    every norm it runs."""
    return 2 * sum(e[0] for name, e in extents.items() if len(e) == 1 and name.endswith(".weight"))


def resnet_catalog(spec: SuperNetSpec, profile: LatencyProfile, element_bytes: int = 4) -> Catalog:
    """The profile's SubNets (its ids are control tuples) with their profiled accuracies."""
    space = resnet_space(spec, element_bytes)
    configs = [SubNetConfig.from_id(s.id) for s in profile.subnets]
    extents = [resnet_extents(spec, c) for c in configs]
    boxes = np.stack([space.box(e) for e in extents])
    private = np.array([norm_stat_elements(e) * element_bytes for e in extents], dtype=np.int64)
    return Catalog(space, tuple(s.id for s in profile.subnets), boxes,
                   np.array([s.accuracy for s in profile.subnets]), private,
                   {"architecture": "embedded conv SuperNet (Fashion-MNIST)", "accuracy_source":
                    "profiled top-1 of the embedded bundle (superserve/data/embedded/profile.json)",
                    "element_bytes": element_bytes, "input_size": spec.input_size})
