"""Offline pipeline for imported Once-for-All SuperNets: OFA checkpoint -> SubNetAct SuperNet ->
SubnetNorm table calibrated on the user's images -> latency profile of this host -> a
servable bundle (`superserve import-ofa`).

Which SubNets are served: the ones of a ``--subnets`` JSON file (OFA control tuples or ids,
each with its measured accuracy, e.g. from OFA's published tables or its accuracy
predictor), or else the space's smallest and largest plus seeded random samples. Without
measured accuracies the profile's ``accuracy`` is a stand-in that only orders SubNets (MACs
over the largest SubNet's MACs) and the profile says so: the scheduler needs an order, and
this importer has no labelled data to measure one.
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from ..bundle_layout import BundleLayout
from ..scheduling.profile import LatencyProfile
from ..supernet import calibrate, save_norm_table, save_weights
from ..supernet.ofa.base import OFASuperNet
from ..supernet.ofa.importer import import_checkpoint
from ..supernet.ofa.space import MobileChoice, ResNetChoice
from .measure import measure_profile

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the normalisation OFA's ImageNet models were trained with
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_FRACTION = 0.875  # OFA's evaluation transform: resize to size / 0.875, centre crop size
PROXY_NOTE = "MACs / MACs of the largest served SubNet (no measured accuracies given: orders SubNets only)"

Progress = Callable[[str, int, int], None]


@dataclass
class OFAImportSettings:
    arch: str
    images: Path  # a directory of images (searched recursively) SubnetNorm is calibrated on
    subnets: Path | None = None  # JSON list of {"id" | "config": {...}, "r": int, "accuracy": float}
    num_subnets: int = 20  # served when no --subnets file is given (smallest and largest included)
    input_size: int = 224  # the resolution requests carry
    resolutions: tuple[int, ...] = ()  # SubNet resolutions (elastic resolution); default: input_size only
    calib_images: int = 256
    batch_size: int = 64
    max_batch: int = 16
    repeats: int = 15
    threads: int = 1
    seed: int = 0


def load_images(root: Path, size: int, limit: int) -> torch.Tensor:
    """Up to ``limit`` images under ``root`` (sorted by path), as OFA evaluates them: resized
    so the shorter side is size / 0.875, centre-cropped to size, ImageNet-normalised."""
    from PIL import Image, UnidentifiedImageError

    paths = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) to calibrate SubnetNorm on")
    resize = math.ceil(size / CROP_FRACTION)
    out = []
    for path in paths[:limit]:
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                w, h = img.size
                scale = resize / min(w, h)
                img = img.resize((max(resize, round(w * scale)), max(resize, round(h * scale))), Image.BILINEAR)
                left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
                arr = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
        except (OSError, UnidentifiedImageError) as exc:
            raise ValueError(f"{path}: not a readable image ({exc})") from None
        out.append(torch.from_numpy(arr).permute(2, 0, 1))
    x = torch.stack(out)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def served_subnets(model: OFASuperNet, settings: OFAImportSettings
                   ) -> tuple[list[ResNetChoice | MobileChoice], dict[str, float] | None]:
    """The SubNets to serve and, when the user gave them, their accuracies."""
    space = model.space
    if settings.subnets is None:
        rng = random.Random(settings.seed)
        picked = {c.id: c for c in (space.smallest(), space.largest())}
        attempts = 0
        while len(picked) < settings.num_subnets and attempts < 100 * settings.num_subnets:
            c = space.sample(rng)
            picked.setdefault(c.id, c)
            attempts += 1
        return list(picked.values()), None
    rows = json.loads(Path(settings.subnets).read_text())
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{settings.subnets}: expected a non-empty JSON list of SubNets")
    configs, accs = [], {}
    for i, row in enumerate(rows):
        try:
            if "id" in row:
                c = space.from_id(row["id"])
            else:
                args = dict(row["config"], r=row.get("r", settings.input_size))
                c = space.make(**args)
            acc = float(row["accuracy"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{settings.subnets}: entry {i}: {exc}; each entry needs \"id\" or \"config\" "
                             "(OFA's set_active_subnet arguments) and \"accuracy\" in [0, 1]") from None
        if not 0 <= acc <= 1:
            raise ValueError(f"{settings.subnets}: entry {i}: accuracy {acc} is not a fraction in [0, 1]")
        configs.append(c)
        accs[c.id] = acc
    return configs, accs


def build_ofa_bundle(checkpoint: Path, out: Path, settings: OFAImportSettings,
                     progress: Progress | None = None) -> dict:
    """Import, calibrate, profile and write the bundle; returns a summary."""
    step = progress or (lambda *a: None)
    t0 = time.perf_counter()
    model = import_checkpoint(checkpoint, settings.arch, settings.input_size, settings.resolutions)
    configs, measured = served_subnets(model, settings)
    images = load_images(settings.images, settings.input_size, settings.calib_images)
    calibrate(model, configs, image_batches(images, settings.batch_size),
              progress=lambda i, n: step("calibrate", i, n))
    model.eval()
    costs = {c.id: model.subnet_cost(c) for c in configs}
    if measured is None:
        top = max(m for m, _ in costs.values())
        accs = {sid: {"val": m / top} for sid, (m, _) in costs.items()}
    else:
        accs = {sid: {"val": a} for sid, a in measured.items()}
    before = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        profile = measure_profile(model, configs, accs, settings.max_batch, settings.repeats,
                                  progress=lambda i, n: step("profile", i, n))
    finally:
        torch.set_num_threads(before)
    source = "given (--subnets)" if measured is not None else PROXY_NOTE
    subnets = profile.subnets if measured is not None else tuple(
        replace(s, val_accuracy=None) for s in profile.subnets)  # a stand-in is no validation accuracy
    profile = LatencyProfile(subnets, profile.device,
                             dict(profile.meta, accuracy_source=source, calibration_images=len(images)))
    layout = BundleLayout(out)
    layout.root.mkdir(parents=True, exist_ok=True)
    save_weights(model, layout.weights, {"source": Path(checkpoint).name})
    save_norm_table(model, layout.norm)
    profile.save(layout.profile)
    return {"arch": settings.arch, "subnets": len(configs), "accuracy_source": source,
            "calibration_images": len(images), "weights_bytes": model.weight_bytes(),
            "norm_table_bytes": model.norm_table_bytes(), "seconds": round(time.perf_counter() - t0, 1),
            "bundle": str(layout.root)}


def image_batches(images: torch.Tensor, batch_size: int) -> Callable[[], Iterable[torch.Tensor]]:
    """The same batches on every call, as calibrate() requires."""
    chunks = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
    return lambda: iter(chunks)
