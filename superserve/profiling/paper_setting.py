"""A latency profile of the SuperServe paper's own setting, for the simulator: OFA ResNet-50
SubNets on 8 GPUs, built without a GPU.

What it holds and where every number comes from:

* **SubNets**: real control tuples of Once-for-All's ``ofa_resnet50`` space (stem depth,
  0-2 extra bottleneck blocks on each of 4 stages of 2/2/4/2, expand ratio 0.2/0.25/0.35 per
  block, width multiplier 0.65/0.8/1.0 per stem layer and stage, input resolution). Their
  multiply-accumulates (MACs) are counted layer by layer from OFA's architecture
  (:func:`resnet_macs`; a ResNet-50-D shape at 224 px counts 4.33 G, against the 4.3 G published
  for ResNet-50-D).
  Ids follow the OFA importer's format (``ofa-r50-d...-e...-w...-r...``).
* **Accuracy**: OFA's eight published ResNet-50 SubNets (the ``resnet50D_MAC@...`` networks
  of the once-for-all model zoo, ImageNet top-1: 0.6 G MACs 75.0 % ... 4.1 G 79.8 %; the
  three smallest after 25 epochs of fine-tuning, as published), interpolated linearly in
  log-MACs between published points. A SubNet's accuracy is thus a function of its MACs
  alone; SubNets outside the published range are not served (no extrapolation).
* **Latency**: no GPU was lent, so a model fitted to the paper's published throughput: 8
  GPUs sustain about 2,000 req/s with the most accurate and 8,000 req/s with the fastest
  SubNet, at batch 16 (the largest). A GPU's batch latency is a fixed cost (kernel launches,
  framework, transfer) plus a per-item cost that grows with the work, so
  ``latency(s, b) = fixed + per_gmac * MACs(s) * b``; the two anchors fix both constants
  (:meth:`GpuLatencyModel.fit`): 7.8 ms fixed and 0.86 ms per GMAC per image for the
  served range 0.6-4.1 GMACs (a batch of 16 costs 1.9x a batch of 1 for the fastest SubNet,
  5.7x for the most accurate). p99 is p50 x ``P99_FACTOR``.

Every assumption is recorded in the profile's ``meta`` so that any output built on it says
plainly that its latencies are modelled, not measured.
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

import numpy as np

from superserve.scheduling.profile import LatencyProfile, SubnetProfile

# --- OFA ResNet-50 ------------------------------------------------------------------------------
BASE_DEPTHS = (2, 2, 4, 2)
STAGE_WIDTHS = (256, 512, 1024, 2048)
STAGE_STRIDES = (1, 2, 2, 2)
STEM_WIDTH = 64
DEPTH_CHOICES = (0, 1, 2)
EXPAND_CHOICES = (0.2, 0.25, 0.35)
WIDTH_MULTS = (0.65, 0.8, 1.0)
RESOLUTIONS = tuple(range(128, 225, 16))  # a 16-px subset of OFA's elastic-resolution grid
NUM_CLASSES = 1000

# (MACs in G, ImageNet top-1 %): the once-for-all model zoo's resnet50D_MAC@<M>B_top1@<A> nets.
OFA_RESNET50_PUBLISHED = ((0.6, 75.0), (0.9, 76.3), (1.2, 77.1), (1.8, 78.3), (2.4, 79.0), (3.0, 79.3),
                          (3.7, 79.7), (4.1, 79.8))
OFA_SOURCE = ("Once-for-All (Cai et al., ICLR 2020), model zoo of github.com/mit-han-lab/once-for-all: "
              "resnet50D_MAC@0.6B_top1@75.0 ... @4.1B_top1@79.8 (the 0.6/0.9/1.2 B nets after 25 epochs of "
              "fine-tuning)")
P99_FACTOR = 1.05  # GPU kernel times vary little batch to batch; the simulations here use p50


def make_divisible(value: float, divisor: int = 8) -> int:
    """OFA's channel rounding: the nearest multiple of ``divisor``, never below it and never
    more than 10 % under ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


@dataclass(frozen=True)
class ResNetConfig:
    """One SubNet: ``d[0]`` stem depth (0 or 2: the stem's residual conv runs only at 2),
    ``d[1:]`` extra blocks per stage, ``e`` one expand ratio per block slot (18), ``w`` width
    indices for the two stem convs and the four stages, ``r`` input resolution."""

    d: tuple[int, ...]
    e: tuple[float, ...]
    w: tuple[int, ...]
    r: int

    def active(self) -> list[list[int]]:
        """Block-slot indices that run, per stage."""
        out, start = [], 0
        for s, base in enumerate(BASE_DEPTHS):
            out.append(list(range(start, start + base + self.d[s + 1])))
            start += base + max(DEPTH_CHOICES)
        return out

    def canonical(self) -> "ResNetConfig":
        """Skipped blocks' expand ratios read as the largest, so one SubNet has one id."""
        on = {i for stage in self.active() for i in stage}
        e = tuple(x if i in on else max(EXPAND_CHOICES) for i, x in enumerate(self.e))
        return ResNetConfig(self.d, e, self.w, self.r)

    @property
    def id(self) -> str:
        codes = "".join(f"{round(x * 100):02d}" for x in self.e)
        return f"ofa-r50-d{''.join(map(str, self.d))}-e{codes}-w{''.join(map(str, self.w))}-r{self.r}"

    def to_dict(self) -> dict:
        return {"d": list(self.d), "e": list(self.e), "w": list(self.w), "r": self.r}


def num_block_slots() -> int:
    return sum(b + max(DEPTH_CHOICES) for b in BASE_DEPTHS)


def sample_config(rng: random.Random) -> ResNetConfig:
    """A uniformly drawn SubNet of the space (canonical)."""
    n = len(BASE_DEPTHS)
    d = (rng.choice((0, max(DEPTH_CHOICES))),) + tuple(rng.choice(DEPTH_CHOICES) for _ in range(n))
    e = tuple(rng.choice(EXPAND_CHOICES) for _ in range(num_block_slots()))
    w = tuple(rng.randrange(len(WIDTH_MULTS)) for _ in range(n + 2))
    return ResNetConfig(d, e, w, rng.choice(RESOLUTIONS)).canonical()


def _conv(cin: int, cout: int, k: int, hw: int) -> int:
    return cin * cout * k * k * hw * hw


def _down(hw: int, stride: int) -> int:
    return math.ceil(hw / stride)


def resnet_macs(cfg: ResNetConfig) -> int:
    """Multiply-accumulates of one image through the SubNet (convolutions and the classifier;
    BatchNorm, ReLU and pooling are not counted, as in OFA's figures)."""
    stem_out = [make_divisible(STEM_WIDTH * m) for m in WIDTH_MULTS]
    stem_mid = [make_divisible(c // 2) for c in stem_out]
    mid, cin = stem_mid[cfg.w[0]], stem_out[cfg.w[1]]
    hw = _down(cfg.r, 2)
    macs = _conv(3, mid, 3, hw)
    if cfg.d[0] == max(DEPTH_CHOICES):
        macs += _conv(mid, mid, 3, hw)
    macs += _conv(mid, cin, 3, hw)
    hw = _down(hw, 2)  # max pool
    for s, blocks in enumerate(cfg.active()):
        cout = make_divisible(STAGE_WIDTHS[s] * WIDTH_MULTS[cfg.w[s + 2]])
        for k, slot in enumerate(blocks):
            stride = STAGE_STRIDES[s] if k == 0 else 1
            out_hw = _down(hw, stride)
            m = make_divisible(round(cout * cfg.e[slot]))
            macs += _conv(cin, m, 1, hw) + _conv(m, m, 3, out_hw) + _conv(m, cout, 1, out_hw)
            if stride != 1 or cin != cout:
                macs += _conv(cin, cout, 1, out_hw)  # OFA's avgpool_conv shortcut
            cin, hw = cout, out_hw
    return macs + cin * NUM_CLASSES


def published_accuracy(gmacs: float) -> float:
    """Top-1 (fraction) at ``gmacs`` by linear interpolation in log-MACs between OFA's
    published ResNet-50 points; outside their range it raises (nothing is extrapolated)."""
    xs = np.log([m for m, _ in OFA_RESNET50_PUBLISHED])
    ys = [a for _, a in OFA_RESNET50_PUBLISHED]
    x = math.log(gmacs)
    if not xs[0] - 1e-9 <= x <= xs[-1] + 1e-9:
        raise ValueError(f"{gmacs:.3f} GMACs is outside OFA's published range "
                         f"{OFA_RESNET50_PUBLISHED[0][0]}-{OFA_RESNET50_PUBLISHED[-1][0]} G")
    return float(np.interp(x, xs, ys)) / 100.0


# --- the GPU latency model ----------------------------------------------------------------------
@dataclass(frozen=True)
class ThroughputAnchors:
    """The paper's published cluster throughput: ``workers`` GPUs sustain ``fastest_qps`` with
    the fastest SubNet and ``most_accurate_qps`` with the most accurate one, at ``max_batch``."""

    workers: int = 8
    fastest_qps: float = 8000.0
    most_accurate_qps: float = 2000.0
    max_batch: int = 16


PAPER_ANCHORS = ThroughputAnchors()


@dataclass(frozen=True)
class GpuLatencyModel:
    """latency(b) = fixed_ms + per_gmac_ms * GMACs * b: a fixed cost per batch and a per-image
    cost proportional to the SubNet's work."""

    fixed_ms: float
    per_gmac_ms: float

    @classmethod
    def fit(cls, anchors: ThroughputAnchors, fastest_gmacs: float, accurate_gmacs: float) -> "GpuLatencyModel":
        """The two constants that reproduce both anchors exactly at the largest batch."""
        b = anchors.max_batch
        lat_fast = 1000.0 * anchors.workers * b / anchors.fastest_qps
        lat_acc = 1000.0 * anchors.workers * b / anchors.most_accurate_qps
        if not accurate_gmacs > fastest_gmacs:
            raise ValueError("the most accurate SubNet must do more work than the fastest")
        per = (lat_acc - lat_fast) / (b * (accurate_gmacs - fastest_gmacs))
        fixed = lat_fast - per * fastest_gmacs * b
        if not (per > 0 and fixed > 0):
            raise ValueError(f"anchors {anchors} give a non-physical model (fixed {fixed:.3f} ms, "
                             f"per-GMAC {per:.4f} ms)")
        return cls(fixed, per)

    def latencies_ms(self, gmacs: float, max_batch: int) -> tuple[float, ...]:
        return tuple(self.fixed_ms + self.per_gmac_ms * gmacs * b for b in range(1, max_batch + 1))


# --- the served set ------------------------------------------------------------------------------
def candidate_configs(samples: int, seed: int) -> dict[str, tuple[ResNetConfig, int]]:
    """``samples`` seeded draws from the space, by id, with their MACs."""
    rng = random.Random(seed)
    out: dict[str, tuple[ResNetConfig, int]] = {}
    for _ in range(samples):
        c = sample_config(rng)
        out.setdefault(c.id, (c, resnet_macs(c)))
    return out


def choose_served(cands: dict[str, tuple[ResNetConfig, int]], count: int) -> list[tuple[ResNetConfig, int]]:
    """``count`` SubNets whose MACs are evenly spaced in log-MACs over OFA's published range:
    for each target, the nearest candidate not yet taken. With accuracy a function of MACs,
    every one of them is on the accuracy-latency front, as the paper's served set is."""
    lo, hi = OFA_RESNET50_PUBLISHED[0][0] * 1e9, OFA_RESNET50_PUBLISHED[-1][0] * 1e9
    pool = sorted((m, c.id, c) for c, m in cands.values() if lo <= m <= hi)
    if len(pool) < count:
        raise ValueError(f"only {len(pool)} sampled SubNets fall in the published range; sample more")
    macs = np.array([p[0] for p in pool], dtype=np.float64)
    taken: set[int] = set()
    for t in np.exp(np.linspace(math.log(lo), math.log(hi), count)):
        order = np.argsort(np.abs(np.log(macs) - math.log(t)))
        taken.add(int(next(i for i in order if int(i) not in taken)))
    return [(pool[i][2], int(pool[i][0])) for i in sorted(taken)]


def paper_profile(count: int = 24, *, anchors: ThroughputAnchors = PAPER_ANCHORS, samples: int = 20_000,
                  seed: int = 0) -> LatencyProfile:
    """The paper's setting as a :class:`LatencyProfile`: ``count`` OFA ResNet-50 SubNets spanning
    OFA's published 0.6-4.1 GMAC range, published accuracies, modelled GPU latencies."""
    served = choose_served(candidate_configs(samples, seed), count)
    gm = [m / 1e9 for _, m in served]
    model = GpuLatencyModel.fit(anchors, min(gm), max(gm))
    subnets = []
    for (cfg, macs), g in zip(served, gm):
        p50 = model.latencies_ms(g, anchors.max_batch)
        subnets.append(SubnetProfile(
            id=cfg.id, accuracy=round(published_accuracy(g), 6), latency_p50_ms=p50,
            latency_p99_ms=tuple(v * P99_FACTOR for v in p50), config={**cfg.to_dict(), "gmacs": round(g, 4)},
            flops=2 * macs))
    meta = {
        "method": "modelled, not measured: no GPU was lent to this task",
        "supernet": "OFA ResNet-50 (ofa_resnet50): depth 0-2 extra blocks per stage, expand 0.2/0.25/0.35, "
                    f"width 0.65/0.8/1.0, resolution {RESOLUTIONS[0]}-{RESOLUTIONS[-1]} px",
        "accuracy_source": OFA_SOURCE,
        "accuracy_rule": "linear interpolation of top-1 in log-MACs between the published points",
        "latency_model": "latency(s, b) = fixed_ms + per_gmac_ms * GMACs(s) * b, fitted to the anchors at batch "
                         f"{anchors.max_batch}; p99 = {P99_FACTOR} x p50",
        "latency_constants": asdict(model),
        "anchors": asdict(anchors),
        "selection": f"{count} SubNets nearest to log-evenly spaced MACs targets among {samples} seeded draws "
                     f"(seed {seed})",
    }
    return LatencyProfile(tuple(subnets), device=f"modelled GPU ({anchors.workers} x, fitted to SuperServe's "
                                                 "published throughput)", meta=meta)
