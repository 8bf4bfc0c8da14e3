"""The search spaces of Once-for-All SuperNets and their SubNet control tuples.

OFA names a SubNet by the arguments of its ``set_active_subnet``: for the ResNet-50 family
``d`` (stem skip + extra blocks per stage), ``e`` (expand ratio per block) and ``w`` (width
index per stem layer and stage); for the MobileNetV3 family ``ks`` (kernel per block), ``e``
and ``d`` (blocks per stage). Each control tuple here carries those plus the input
resolution ``r`` (OFA's elastic resolution), and a stable text id that the serving path
actuates by. Settings of blocks a SubNet skips do not change it, so ids are canonical: a
skipped block always reads as the largest choice.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Protocol


def make_divisible(value: float, divisor: int = 8) -> int:
    """OFA's channel rounding (the TF MobileNet rule): the nearest multiple of ``divisor``,
    never below it and never more than 10 % under ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _ratio_code(ratio: float) -> str:
    return f"{round(ratio * 100):02d}"


def _ratios(code: str) -> tuple[float, ...]:
    return tuple(int(code[i:i + 2]) / 100 for i in range(0, len(code), 2))


def _ints(code: str) -> tuple[int, ...]:
    return tuple(int(c) for c in code)


@dataclass(frozen=True)
class ResNetChoice:
    """One SubNet of an OFA ResNet: ``d[0]`` is the stem's depth (the stem's residual conv
    runs only at the largest value), ``d[1:]`` the extra blocks per stage, ``e`` one expand
    ratio per block (all blocks, skipped ones included), ``w`` width indices of the first
    stem conv, the last stem conv and each stage, ``r`` the input resolution."""

    d: tuple[int, ...]
    e: tuple[float, ...]
    w: tuple[int, ...]
    r: int

    @property
    def id(self) -> str:
        return (f"ofa-r50-d{''.join(map(str, self.d))}-e{''.join(map(_ratio_code, self.e))}"
                f"-w{''.join(map(str, self.w))}-r{self.r}")

    def to_dict(self) -> dict:
        return {"d": list(self.d), "e": list(self.e), "w": list(self.w), "r": self.r}

    def ofa_arguments(self) -> dict:
        """The keyword arguments of OFA's ``set_active_subnet`` that select this SubNet."""
        return {"d": list(self.d), "e": list(self.e), "w": list(self.w)}


@dataclass(frozen=True)
class MobileChoice:
    """One SubNet of an OFA MobileNetV3 / ProxylessNAS: per elastic block a kernel size and
    an expand ratio (OFA's are whole numbers: 3, 4, 6), per stage a depth, and the input
    resolution."""

    ks: tuple[int, ...]
    e: tuple[float, ...]
    d: tuple[int, ...]
    r: int

    @property
    def id(self) -> str:
        return (f"ofa-mb-k{''.join(map(str, self.ks))}-e{''.join(str(round(x)) for x in self.e)}"
                f"-d{''.join(map(str, self.d))}-r{self.r}")

    def to_dict(self) -> dict:
        return {"ks": list(self.ks), "e": list(self.e), "d": list(self.d), "r": self.r}

    def ofa_arguments(self) -> dict:
        return {"ks": list(self.ks), "e": list(self.e), "d": list(self.d)}


class OFASpace(Protocol):
    def smallest(self) -> ResNetChoice | MobileChoice: ...
    def largest(self) -> ResNetChoice | MobileChoice: ...
    def sample(self, rng: random.Random) -> ResNetChoice | MobileChoice: ...
    def from_id(self, subnet_id: str) -> ResNetChoice | MobileChoice: ...


def _stage_blocks(blocks_per_stage: tuple[int, ...]) -> list[range]:
    out, start = [], 0
    for n in blocks_per_stage:
        out.append(range(start, start + n))
        start += n
    return out


@dataclass(frozen=True)
class ResNetSpace:
    """The ``ofa_resnet50`` space: 4 stages of 2, 2, 4, 2 base blocks plus 0..2 extra."""

    depth_choices: tuple[int, ...] = (0, 1, 2)
    expand_choices: tuple[float, ...] = (0.2, 0.25, 0.35)
    width_mults: tuple[float, ...] = (0.65, 0.8, 1.0)
    base_depths: tuple[int, ...] = (2, 2, 4, 2)
    resolutions: tuple[int, ...] = (224,)

    @property
    def blocks_per_stage(self) -> tuple[int, ...]:
        return tuple(b + max(self.depth_choices) for b in self.base_depths)

    @property
    def num_blocks(self) -> int:
        return sum(self.blocks_per_stage)

    def active_blocks(self, choice: ResNetChoice) -> list[int]:
        stages = _stage_blocks(self.blocks_per_stage)
        return [i for s, blocks in enumerate(stages) for i in blocks[:self.base_depths[s] + choice.d[s + 1]]]

    def canonical(self, choice: ResNetChoice) -> ResNetChoice:
        """The same SubNet with every skipped block's expand ratio set to the largest."""
        active = set(self.active_blocks(choice))
        e = tuple(x if i in active else max(self.expand_choices) for i, x in enumerate(choice.e))
        return replace(choice, e=e)

    def validate(self, choice: ResNetChoice) -> None:
        dmax, stages = max(self.depth_choices), len(self.base_depths)
        if len(choice.d) != stages + 1 or choice.d[0] not in (min(self.depth_choices), dmax):
            raise ValueError(f"d must hold the stem depth ({min(self.depth_choices)} or {dmax}) and one depth "
                             f"per stage ({stages}), got {choice.d}")
        if any(x not in self.depth_choices for x in choice.d[1:]):
            raise ValueError(f"stage depths must be in {self.depth_choices}, got {choice.d[1:]}")
        if len(choice.e) != self.num_blocks or any(x not in self.expand_choices for x in choice.e):
            raise ValueError(f"e needs {self.num_blocks} ratios from {self.expand_choices}, got {choice.e}")
        if len(choice.w) != stages + 2 or any(not 0 <= x < len(self.width_mults) for x in choice.w):
            raise ValueError(f"w needs {stages + 2} width indices below {len(self.width_mults)}, got {choice.w}")
        if choice.r not in self.resolutions:
            raise ValueError(f"resolution {choice.r} not in {self.resolutions}")

    def make(self, d, e, w, r) -> ResNetChoice:
        choice = ResNetChoice(tuple(d), tuple(float(x) for x in e), tuple(w), int(r))
        self.validate(choice)
        return self.canonical(choice)

    def largest(self) -> ResNetChoice:
        n = len(self.base_depths)
        return self.make((max(self.depth_choices),) * (n + 1), (max(self.expand_choices),) * self.num_blocks,
                         (len(self.width_mults) - 1,) * (n + 2), max(self.resolutions))

    def smallest(self) -> ResNetChoice:
        n = len(self.base_depths)
        return self.make((min(self.depth_choices),) * (n + 1), (min(self.expand_choices),) * self.num_blocks,
                         (0,) * (n + 2), min(self.resolutions))

    def sample(self, rng: random.Random) -> ResNetChoice:
        n = len(self.base_depths)
        d = [rng.choice((min(self.depth_choices), max(self.depth_choices)))]
        d += [rng.choice(self.depth_choices) for _ in range(n)]
        e = [rng.choice(self.expand_choices) for _ in range(self.num_blocks)]
        w = [rng.randrange(len(self.width_mults)) for _ in range(n + 2)]
        return self.make(d, e, w, rng.choice(self.resolutions))

    def from_id(self, subnet_id: str) -> ResNetChoice:
        try:
            head, arch, d, e, w, r = subnet_id.split("-")
            if (head, arch) != ("ofa", "r50"):
                raise ValueError("not an OFA ResNet-50 id")
            return self.make(_ints(d[1:]), _ratios(e[1:]), _ints(w[1:]), int(r[1:]))
        except (ValueError, IndexError) as exc:
            raise ValueError(f"not an OFA ResNet-50 SubNet id: {subnet_id!r} ({exc})") from None

    def to_dict(self) -> dict:
        return {"depth_choices": list(self.depth_choices), "expand_choices": list(self.expand_choices),
                "width_mults": list(self.width_mults), "base_depths": list(self.base_depths),
                "resolutions": list(self.resolutions)}

    @classmethod
    def from_dict(cls, d: dict) -> "ResNetSpace":
        return cls(**{k: tuple(v) for k, v in d.items()})


@dataclass(frozen=True)
class MobileSpace:
    """The ``ofa_mbv3_d234_e346_k357_w*`` space (5 elastic stages of up to 4 blocks) and the
    ``ofa_proxyless_d234_e346_k357_w1.3`` one (``blocks_per_stage`` 4, 4, 4, 4, 4, 1: a stage
    with fewer blocks than a depth choice runs all of them)."""

    kernel_choices: tuple[int, ...] = (3, 5, 7)
    expand_choices: tuple[float, ...] = (3.0, 4.0, 6.0)
    depth_choices: tuple[int, ...] = (2, 3, 4)
    num_stages: int = 5
    resolutions: tuple[int, ...] = (224,)
    blocks_per_stage: tuple[int, ...] = ()  # default: max(depth_choices) in every stage

    @property
    def stage_blocks(self) -> tuple[int, ...]:
        return self.blocks_per_stage or (max(self.depth_choices),) * self.num_stages

    @property
    def num_blocks(self) -> int:
        return sum(self.stage_blocks)

    def active_blocks(self, choice: MobileChoice) -> list[int]:
        stages = _stage_blocks(self.stage_blocks)
        return [i for s, blocks in enumerate(stages) for i in blocks[:choice.d[s]]]

    def canonical(self, choice: MobileChoice) -> MobileChoice:
        active = set(self.active_blocks(choice))
        ks = tuple(k if i in active else max(self.kernel_choices) for i, k in enumerate(choice.ks))
        e = tuple(x if i in active else max(self.expand_choices) for i, x in enumerate(choice.e))
        d = tuple(max(self.depth_choices) if x >= n else x for x, n in zip(choice.d, self.stage_blocks))
        return replace(choice, ks=ks, e=e, d=d)

    def validate(self, choice: MobileChoice) -> None:
        n = self.num_blocks
        if len(choice.ks) != n or any(k not in self.kernel_choices for k in choice.ks):
            raise ValueError(f"ks needs {n} kernel sizes from {self.kernel_choices}, got {choice.ks}")
        if len(choice.e) != n or any(x not in self.expand_choices for x in choice.e):
            raise ValueError(f"e needs {n} expand ratios from {self.expand_choices}, got {choice.e}")
        if len(choice.d) != self.num_stages or any(x not in self.depth_choices for x in choice.d):
            raise ValueError(f"d needs {self.num_stages} depths from {self.depth_choices}, got {choice.d}")
        if choice.r not in self.resolutions:
            raise ValueError(f"resolution {choice.r} not in {self.resolutions}")

    def make(self, ks, e, d, r) -> MobileChoice:
        choice = MobileChoice(tuple(ks), tuple(float(x) for x in e), tuple(d), int(r))
        self.validate(choice)
        return self.canonical(choice)

    def largest(self) -> MobileChoice:
        n = self.num_blocks
        return self.make((max(self.kernel_choices),) * n, (max(self.expand_choices),) * n,
                         (max(self.depth_choices),) * self.num_stages, max(self.resolutions))

    def smallest(self) -> MobileChoice:
        n = self.num_blocks
        return self.make((min(self.kernel_choices),) * n, (min(self.expand_choices),) * n,
                         (min(self.depth_choices),) * self.num_stages, min(self.resolutions))

    def sample(self, rng: random.Random) -> MobileChoice:
        n = self.num_blocks
        return self.make([rng.choice(self.kernel_choices) for _ in range(n)],
                         [rng.choice(self.expand_choices) for _ in range(n)],
                         [rng.choice(self.depth_choices) for _ in range(self.num_stages)],
                         rng.choice(self.resolutions))

    def from_id(self, subnet_id: str) -> MobileChoice:
        try:
            head, arch, k, e, d, r = subnet_id.split("-")
            if (head, arch) != ("ofa", "mb"):
                raise ValueError("not an OFA MobileNet id")
            return self.make(_ints(k[1:]), _ints(e[1:]), _ints(d[1:]), int(r[1:]))
        except (ValueError, IndexError) as exc:
            raise ValueError(f"not an OFA MobileNet SubNet id: {subnet_id!r} ({exc})") from None

    def to_dict(self) -> dict:
        return {"kernel_choices": list(self.kernel_choices), "expand_choices": list(self.expand_choices),
                "depth_choices": list(self.depth_choices), "num_stages": self.num_stages,
                "resolutions": list(self.resolutions), "blocks_per_stage": list(self.stage_blocks)}

    @classmethod
    def from_dict(cls, d: dict) -> "MobileSpace":
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})
