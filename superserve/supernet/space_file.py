"""A SuperNet space described in a file (JSON, or TOML by the .toml suffix).

Schema (every key optional but ``input_size``; the defaults are Fashion-MNIST's space):

    {
      "input_size": 32,              # images are resized to input_size x input_size
      "in_channels": 3,              # 1 (grayscale) or 3 (RGB); default: the data's
      "num_classes": 5,              # default: the data's class count (must match it if given)
      "stem_channels": 24,           # stem convolution's output channels
      "stem_stride": 2,              # 1 for small images (<= 32 px) keeps more resolution
      "stage_channels": [48, 96, 192],   # output channels of each stage (the stage count)
      "stage_strides": [1, 2, 2],        # one per stage
      "depths": [1, 2, 3, 4],        # elastic depth: blocks a stage may run (1..9)
      "expand_ratios": [0.25, 0.5, 0.75],  # elastic bottleneck width, in (0, 1), steps of 0.01
      "widths": [0.25, 0.5, 0.75, 1.0]     # width multipliers, in (0, 1], steps of 0.01
    }

Every SubNet picks, per stage, a depth from ``depths`` and an expand ratio from
``expand_ratios`` per block, and one width multiplier from ``widths``. Unknown keys and bad
values are refused with a ValueError that names the key.
"""
from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any

from .config import SuperNetSpec

KEYS = {"input_size", "in_channels", "num_classes", "stem_channels", "stem_stride", "stage_channels",
        "stage_strides", "depths", "expand_ratios", "widths"}


def _int(d: dict, key: str, lo: int, hi: int, where: str) -> int | None:
    if key not in d:
        return None
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"{where}: {key} must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def _ints(d: dict, key: str, lo: int, hi: int, where: str) -> tuple[int, ...] | None:
    if key not in d:
        return None
    v = d[key]
    if (not isinstance(v, list) or not v
            or any(isinstance(x, bool) or not isinstance(x, int) or not lo <= x <= hi for x in v)):
        raise ValueError(f"{where}: {key} must be a non-empty list of integers in [{lo}, {hi}], got {v!r}")
    return tuple(v)


def _ratios(d: dict, key: str, top_open: bool, where: str) -> tuple[float, ...] | None:
    if key not in d:
        return None
    v = d[key]
    interval = "(0, 1)" if top_open else "(0, 1]"
    ok = isinstance(v, list) and bool(v) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
        and 0 < x and (x < 1 if top_open else x <= 1) for x in v)
    if not ok:
        raise ValueError(f"{where}: {key} must be a non-empty list of numbers in {interval}, got {v!r}")
    if any(abs(round(x * 100) - x * 100) > 1e-6 for x in v):
        raise ValueError(f"{where}: {key} must be multiples of 0.01 (SubNet ids carry them as percents), got {v!r}")
    if len(set(round(x * 100) for x in v)) != len(v):
        raise ValueError(f"{where}: {key} has repeated values: {v!r}")
    return tuple(sorted(round(x * 100) / 100 for x in v))


def parse_space(d: Any, where: str = "space") -> dict[str, Any]:
    """The checked SuperNetSpec arguments of a space description (a dict from JSON/TOML)."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: a space is an object of settings, got {type(d).__name__}")
    unknown = sorted(set(d) - KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(KEYS)}")
    if "input_size" not in d:
        raise ValueError(f"{where}: input_size (the image side in pixels) is required")
    out: dict[str, Any] = {}
    for key, lo, hi in (("input_size", 4, 4096), ("in_channels", 1, 3), ("num_classes", 2, 100_000),
                        ("stem_channels", 1, 4096), ("stem_stride", 1, 4)):
        v = _int(d, key, lo, hi, where)
        if v is not None:
            out[key] = v
    if out.get("in_channels") == 2:
        raise ValueError(f"{where}: in_channels must be 1 (grayscale) or 3 (RGB), got 2")
    for key, name, lo, hi in (("stage_channels", "stage_channels", 1, 8192), ("stage_strides", "stage_strides", 1, 4),
                              ("depths", "depth_choices", 1, 9)):
        v = _ints(d, key, lo, hi, where)
        if v is not None:
            out[name] = tuple(sorted(set(v))) if key == "depths" else v
    if "depths" in d and len(out["depth_choices"]) != len(d["depths"]):
        raise ValueError(f"{where}: depths has repeated values: {d['depths']!r}")
    for key, name, top_open in (("expand_ratios", "expand_choices", True), ("widths", "width_choices", False)):
        v = _ratios(d, key, top_open, where)
        if v is not None:
            out[name] = v
    default = SuperNetSpec()
    stages = len(out.get("stage_channels", default.stage_channels))
    strides = out.get("stage_strides", default.stage_strides)
    if len(strides) != stages:
        raise ValueError(f"{where}: stage_strides has {len(strides)} entries for {stages} stages "
                         "(stage_channels); give one stride per stage")
    total_stride = out.get("stem_stride", default.stem_stride) * math.prod(strides)
    if total_stride > out["input_size"]:
        raise ValueError(f"{where}: the strides downsample by {total_stride}, more than input_size "
                         f"{out['input_size']}; use smaller strides or larger images")
    return out


def load_space(path: str | Path) -> dict[str, Any]:
    """The checked SuperNetSpec arguments in a JSON or TOML space file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the space file ({exc})") from None
    try:
        d = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'} ({exc})") from None
    return parse_space(d, str(path))


def space_spec(space: dict[str, Any], num_classes: int, in_channels: int, where: str = "space") -> SuperNetSpec:
    """The SuperNetSpec of checked space arguments for data of ``num_classes`` classes and
    ``in_channels`` channels (a space that names either must agree with the data)."""
    if space.get("num_classes", num_classes) != num_classes:
        raise ValueError(f"{where}: num_classes {space['num_classes']} but the data has {num_classes} classes")
    if space.get("in_channels", in_channels) != in_channels:
        raise ValueError(f"{where}: in_channels {space['in_channels']} but the data has {in_channels} channel(s)")
    return SuperNetSpec(**{**space, "num_classes": num_classes, "in_channels": in_channels})
