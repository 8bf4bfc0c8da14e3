"""SuperNet architecture specs (the search space) and SubNet control tuples."""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Iterator


def active_channels(full: int, ratio: float) -> int:
    """WeightSlice rule: the first ceil(ratio * full) channels (at least one)."""
    return max(1, math.ceil(ratio * full - 1e-9))


@dataclass(frozen=True)
class SubNetConfig:
    """The control tuple that selects one SubNet.

    depths[m]     blocks run in stage m (LayerSelect: the first depths[m] blocks)
    expands[m][i] expand ratio of the i-th active block of stage m (bottleneck width)
    width         width multiplier on the stem and on every stage's output channels
    """

    depths: tuple[int, ...]
    expands: tuple[tuple[float, ...], ...]
    width: float

    def __post_init__(self) -> None:
        if len(self.depths) != len(self.expands):
            raise ValueError("depths and expands must have one entry per stage")
        for m, (d, e) in enumerate(zip(self.depths, self.expands)):
            if d < 1 or len(e) != d:
                raise ValueError(f"stage {m}: depth {d} needs exactly {d} expand ratios, got {len(e)}")
            if any(not 0 < r < 1 for r in e):
                raise ValueError(f"stage {m}: expand ratios must lie in (0, 1), got {e}")
        if not 0 < self.width <= 1:
            raise ValueError(f"width multiplier must lie in (0, 1], got {self.width}")

    @property
    def id(self) -> str:
        """Stable, human-readable id, e.g. 'w075-d213-e50.2550.757575'."""
        stages = ".".join("".join(f"{round(e * 100):02d}" for e in es) for es in self.expands)
        return f"w{round(self.width * 100):03d}-d{''.join(str(d) for d in self.depths)}-e{stages}"

    @classmethod
    def from_id(cls, subnet_id: str) -> "SubNetConfig":
        try:
            w, d, e = subnet_id.split("-")
            width = int(w[1:]) / 100
            depths = tuple(int(c) for c in d[1:])
            stages = e[1:].split(".")
            expands = tuple(
                tuple(int(s[i:i + 2]) / 100 for i in range(0, len(s), 2)) for s in stages
            )
            return cls(depths, expands, width)
        except (ValueError, IndexError) as exc:
            raise ValueError(f"not a SubNet id: {subnet_id!r} ({exc})") from None

    def to_dict(self) -> dict:
        return {"depths": list(self.depths), "expands": [list(e) for e in self.expands], "width": self.width}

    @classmethod
    def from_dict(cls, d: dict) -> "SubNetConfig":
        return cls(tuple(d["depths"]), tuple(tuple(e) for e in d["expands"]), float(d["width"]))


@dataclass(frozen=True)
class SuperNetSpec:
    """An OFA-ResNet-style family: stem, stages of bottleneck blocks, elastic depth per stage,
    elastic expand ratio per block, elastic width multiplier."""

    in_channels: int = 1
    num_classes: int = 10
    input_size: int = 28
    stem_channels: int = 24
    stem_stride: int = 2
    stem_pool: bool = False  # ImageNet-style 3x3/2 max-pool after the stem
    stage_channels: tuple[int, ...] = (48, 96, 192)
    stage_strides: tuple[int, ...] = (1, 2, 2)
    depth_choices: tuple[int, ...] = (1, 2, 3, 4)
    expand_choices: tuple[float, ...] = (0.25, 0.5, 0.75)
    width_choices: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def num_stages(self) -> int:
        return len(self.stage_channels)

    @property
    def max_depth(self) -> int:
        return max(self.depth_choices)

    def max_mid(self, stage: int) -> int:
        return active_channels(self.stage_channels[stage], max(self.expand_choices))

    # --- the search space --------------------------------------------------------------
    def largest(self) -> SubNetConfig:
        e, d = max(self.expand_choices), self.max_depth
        return SubNetConfig((d,) * self.num_stages, ((e,) * d,) * self.num_stages, max(self.width_choices))

    def smallest(self) -> SubNetConfig:
        e, d = min(self.expand_choices), min(self.depth_choices)
        return SubNetConfig((d,) * self.num_stages, ((e,) * d,) * self.num_stages, min(self.width_choices))

    def space_size(self) -> int:
        per_stage = sum(len(self.expand_choices) ** d for d in self.depth_choices)
        return len(self.width_choices) * per_stage ** self.num_stages

    def sample(self, rng: random.Random) -> SubNetConfig:
        depths = tuple(rng.choice(self.depth_choices) for _ in range(self.num_stages))
        expands = tuple(tuple(rng.choice(self.expand_choices) for _ in range(d)) for d in depths)
        return SubNetConfig(depths, expands, rng.choice(self.width_choices))

    def enumerate(self) -> Iterator[SubNetConfig]:
        """Every SubNet of the space (use space_size() first: it may be astronomically big)."""
        stage_opts = [
            tuple(itertools.chain.from_iterable(
                itertools.product(self.expand_choices, repeat=d) for d in self.depth_choices))
            for _ in range(self.num_stages)
        ]
        for width in self.width_choices:
            for combo in itertools.product(*stage_opts):
                yield SubNetConfig(tuple(len(e) for e in combo), tuple(combo), width)

    def validate(self, config: SubNetConfig) -> None:
        """Raise ValueError naming the offending field if config is not in this space."""
        if len(config.depths) != self.num_stages:
            raise ValueError(f"SubNet has {len(config.depths)} stages, the SuperNet has {self.num_stages}")
        if config.width not in self.width_choices:
            raise ValueError(f"width {config.width} not in {self.width_choices}")
        for m, (d, es) in enumerate(zip(config.depths, config.expands)):
            if d not in self.depth_choices:
                raise ValueError(f"stage {m}: depth {d} not in {self.depth_choices}")
            for e in es:
                if e not in self.expand_choices:
                    raise ValueError(f"stage {m}: expand ratio {e} not in {self.expand_choices}")

    def to_dict(self) -> dict:
        return {
            "in_channels": self.in_channels, "num_classes": self.num_classes,
            "input_size": self.input_size, "stem_channels": self.stem_channels,
            "stem_stride": self.stem_stride, "stem_pool": self.stem_pool,
            "stage_channels": list(self.stage_channels), "stage_strides": list(self.stage_strides),
            "depth_choices": list(self.depth_choices), "expand_choices": list(self.expand_choices),
            "width_choices": list(self.width_choices),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "SuperNetSpec":
        tuples = {"stage_channels", "stage_strides", "depth_choices", "expand_choices", "width_choices"}
        return cls(**{k: (tuple(v) if k in tuples else v) for k, v in d.items() if k != "extra"})


def fashion_mnist_spec() -> SuperNetSpec:
    """The embedded default: 28x28 grayscale, 10 classes."""
    return SuperNetSpec()


def imagenet_resnet50_spec() -> SuperNetSpec:
    """An ImageNet-sized instance of the same family (OFA-ResNet50-like dimensions)."""
    return SuperNetSpec(
        in_channels=3, num_classes=1000, input_size=224, stem_channels=64, stem_stride=2,
        stem_pool=True, stage_channels=(256, 512, 1024, 2048), stage_strides=(1, 2, 2, 2),
        depth_choices=(2, 3, 4), expand_choices=(0.2, 0.25, 0.35), width_choices=(0.65, 0.8, 1.0),
    )
