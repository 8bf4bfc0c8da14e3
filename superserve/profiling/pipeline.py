"""Offline pipeline: trained weights -> Pareto search -> SubnetNorm calibration -> accuracy
table -> latency profile -> a servable bundle (the embedded default is built by this)."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open

from ..bundle_layout import BundleLayout, DataInfo
from ..datasets import (DEFAULT_FMNIST, Split, holdout_size, is_idx_dir, load_fashion_mnist, load_image_folder,
                        train_val_split)
from ..embedded import load_bundle, save_subset
from ..scheduling.profile import LatencyProfile
from ..supernet import SubNetConfig, SuperResNet, calibrate, load_supernet, save_norm_table, save_weights
from .accuracy import accuracy, calibration_batches, top1_correct
from .measure import check_properties, measure_profile
from .search import Candidate, evolutionary_search, measured_candidate, pareto_front

Progress = Callable[[str, int, int], None]


@dataclass
class BuildSettings:
    data: str | None = str(DEFAULT_FMNIST)  # None: the data the weights were trained on (their "data" entry)
    initial: int = 150  # these defaults built the embedded bundle
    generations: int = 6
    per_generation: int = 50
    search_val_images: int = 5000  # validation images the search ranks on (the split holds
    # 5,000; fewer is faster but noisier at the top of the front); the final table uses all
    calib_images: int = 2000
    subset_images: int = 2000
    profile_threads: int = 1
    seed: int = 0
    candidates_from: str | None = None  # a previous report: re-front its candidates, no re-evaluation


def build_bundle(weights: Path, out: Path, settings: BuildSettings, report: Path | None = None,
                 progress: Progress | None = None) -> dict:
    t_start = time.perf_counter()
    step = progress or (lambda *a: None)
    model = load_supernet(weights)
    full_train, test, info = load_search_data(weights, model.spec, settings)
    train, val = train_val_split(full_train, holdout_size(len(full_train)), seed=settings.seed)
    calib = calibration_batches(train, settings.calib_images, seed=settings.seed)
    candidates, search_s = _search(model, calib, val, settings, step)
    configs = [c.config for c in pareto_front(candidates)]

    # One table for the whole served set, then the accuracy table on full val and test.
    calibrate(model, configs, calib)
    subset = test.take(slice(0, settings.subset_images))
    accs, subset_correct = _accuracy_tables(model, configs, val, test, subset, step)
    norm_effect = _subnetnorm_effect(model, configs, accs, test)
    profile, profile_s = _measure(model, configs, accs, settings.profile_threads, step)
    _write_bundle(BundleLayout(out), model, weights, profile, subset, subset_correct, info)
    summary = {
        "search_space_size": model.spec.space_size(),
        "space_largest": _space_largest(model, configs, accs, calib, val, test),
        "search": _search_summary(settings, candidates, search_s),
        "pareto_size": len(configs),
        "subnetnorm_effect": norm_effect,
        "properties": check_properties(profile),
        "profile_seconds": round(profile_s, 1),
        "device": profile.device, "threads": settings.profile_threads,
        "subnets": [
            {"id": s.id, "flops": s.flops, "params": s.params, "val_accuracy": s.val_accuracy,
             "test_accuracy": s.test_accuracy, "p50_ms_b1": s.latency_p50_ms[0],
             "p50_ms_b16": s.latency_p50_ms[-1]}
            for s in sorted(profile.subnets, key=lambda s: s.flops)
        ],
        "candidates": [{"id": c.config.id, "val_accuracy": c.val_accuracy, "macs": c.macs,
                        "latency_ms": round(c.latency_ms, 4)} for c in candidates],
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(summary, indent=1))
    return summary


def load_search_data(weights: Path, spec, settings: BuildSettings) -> tuple[Split, Split, DataInfo]:
    """(training, test) splits and the input description, as the weights were trained:
    Fashion-MNIST's IDX files, or an image folder read at the spec's size and channels with
    the normalisation and classes training stored in the weights."""
    with safe_open(str(weights), framework="pt") as f:
        meta = f.metadata() or {}
    stored = json.loads(meta["data"]) if "data" in meta else None
    trained = DataInfo.from_dict(stored, f"{weights} (data)") if stored else None
    data = settings.data or (stored or {}).get("source") or str(DEFAULT_FMNIST)
    if is_idx_dir(data):
        full_train, test = load_fashion_mnist(data)
        return full_train, test, trained or DataInfo.fashion_mnist()
    folder = load_image_folder(data, spec.input_size, spec.in_channels, seed=int((stored or {}).get("split_seed", 0)),
                               mean=trained.mean if trained else None, std=trained.std if trained else None)
    if trained is not None and tuple(folder.classes) != trained.classes:
        raise ValueError(f"{data}: classes {list(folder.classes)[:5]} differ from those the weights were trained "
                         f"on {list(trained.classes)[:5]}")
    if len(folder.classes) != spec.num_classes:
        raise ValueError(f"{data}: {len(folder.classes)} classes, the SuperNet has {spec.num_classes}")
    info = DataInfo((folder.channels, folder.size, folder.size), folder.mean, folder.std, folder.classes)
    return folder.train, folder.test, info


def _search(model: SuperResNet, calib, val: Split, settings: BuildSettings, step: Progress
            ) -> tuple[list[Candidate], float]:
    """The candidates (searched, or re-measured from a previous report) and the seconds spent."""
    t0 = time.perf_counter()
    if settings.candidates_from:
        candidates = reuse_candidates(model, Path(settings.candidates_from), calib, settings.profile_threads,
                                      lambda i, n: step("latency", i, n))
    else:
        search_val = val.take(slice(0, settings.search_val_images))
        candidates = evolutionary_search(
            model, calib, search_val, settings.initial, settings.generations, settings.per_generation,
            settings.seed, lambda i, n: step("search", i, n), latency_threads=settings.profile_threads)
    return candidates, time.perf_counter() - t0


def _search_summary(settings: BuildSettings, candidates: list[Candidate], search_s: float) -> dict:
    note = json.loads(Path(settings.candidates_from).read_text()).get("note") if settings.candidates_from else None
    return {"method": "evolutionary (random init + mutation of the Pareto front), OFA-style; "
                      "front = non-dominated in (val accuracy, MACs, p50 latency at the largest batch)",
            "candidates_from": settings.candidates_from, "candidates_note": note,
            "evaluated": len(candidates), "initial_random": settings.initial,
            "generations": settings.generations, "per_generation": settings.per_generation,
            "search_val_images": settings.search_val_images, "seconds": round(search_s, 1)}


def _accuracy_tables(model: SuperResNet, configs: list[SubNetConfig], val: Split, test: Split, subset: Split,
                     step: Progress) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """Per served SubNet: accuracy on the full validation and test splits; images of the
    shipped subset it gets right."""
    accs: dict[str, dict[str, float]] = {}
    subset_correct: dict[str, int] = {}
    for i, c in enumerate(configs):
        accs[c.id] = {"val": accuracy(model, c, val), "test": accuracy(model, c, test)}
        subset_correct[c.id] = top1_correct(model, c, subset)
        step("accuracy", i + 1, len(configs))
    return accs, subset_correct


def _subnetnorm_effect(model: SuperResNet, configs: list[SubNetConfig], accs: dict[str, dict[str, float]],
                       test: Split) -> dict:
    """SubnetNorm matters: the smallest served SubNet with its own vs the full network's statistics."""
    smallest, largest = configs[0], configs[-1]
    if not model.norm_modules():
        return {"applicable": False,
                "note": "LayerNorm normalises each token over its own channels: no running statistics, "
                        "nothing per SubNet to calibrate (SubnetNorm is for BatchNorm)"}
    model.actuate(smallest, stats_of=largest)
    with torch.inference_mode():
        borrowed = sum(int((model(x).argmax(1) == y).sum()) for x, y in _batches(test))
    return {"subnet": smallest.id, "test_accuracy_calibrated": accs[smallest.id]["test"],
            "test_accuracy_full_network_stats": borrowed / len(test)}


def _measure(model: SuperResNet, configs: list[SubNetConfig], accs: dict[str, dict[str, float]], threads: int,
             step: Progress) -> tuple[LatencyProfile, float]:
    """The latency profile measured on ``threads`` torch threads, and the seconds it took."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    profile = measure_profile(model, configs, accs, progress=lambda i, n: step("profile", i, n))
    profile_s = time.perf_counter() - t0
    torch.set_num_threads(before)
    meta = dict(profile.meta, profile_seconds=round(profile_s, 1))
    return LatencyProfile(profile.subnets, profile.device, meta), profile_s


def _write_bundle(layout: BundleLayout, model: SuperResNet, weights: Path, profile: LatencyProfile, subset: Split,
                  subset_correct: dict[str, int], info: DataInfo | None = None) -> None:
    layout.root.mkdir(parents=True, exist_ok=True)
    extra = {"source": str(weights)}
    if info is not None:
        extra["data"] = json.dumps(info.to_dict())
    save_weights(model, layout.weights, extra)
    save_norm_table(model, layout.norm)
    profile.save(layout.profile)
    save_subset(subset, layout.subset)
    layout.subset_accuracy.write_text(json.dumps({"images": len(subset), "correct": subset_correct}, indent=1))
    if info is not None and info != DataInfo.fashion_mnist():
        info.save(layout.data)  # a bundle without data.json is read as Fashion-MNIST's


def _space_largest(model: SuperResNet, configs: list[SubNetConfig], accs: dict[str, dict[str, float]], calib,
                   val: Split, test: Split) -> dict:
    """The space's largest SubNet, whether or not the search kept it (its accuracy on the
    validation images the search ranked on can fall below a smaller SubNet's); call after the
    bundle is written, so its statistics row is not shipped unless it is served."""
    top = model.spec.largest()
    if top.id not in accs:
        calibrate(model, [top], calib)
        accs[top.id] = {"val": accuracy(model, top, val), "test": accuracy(model, top, test)}
    return {"id": top.id, "served": top.id in {c.id for c in configs},
            "val_accuracy": accs[top.id]["val"], "test_accuracy": accs[top.id]["test"]}


def reuse_candidates(model, report: Path, calib, threads: int,
                     progress: Callable[[int, int], None]) -> list[Candidate]:
    """The candidates of a previous search report (their validation accuracies as measured
    then, on the same weights), with their latency measured again here. Timing needs a row of
    statistics, not good ones: each candidate gets one from a single calibration batch (the
    served set is calibrated properly afterwards)."""
    rows = json.loads(report.read_text())["candidates"]
    first = next(iter(calib()))
    out = []
    for i, r in enumerate(rows):
        config = model.config_from_id(r["id"])
        calibrate(model, [config], lambda: [first])
        out.append(measured_candidate(model, config, float(r["val_accuracy"]), threads=threads))
        progress(i + 1, len(rows))
    return out


def _batches(split: Split, size: int = 500):
    for i in range(0, len(split), size):
        yield split.normalized(i, i + size), split.labels[i:i + size]


def reprofile(bundle_dir: Path, out: Path, threads: int = 1, max_batch: int = 16, repeats: int = 15,
              progress: Callable[[int, int], None] | None = None, device: str = "cpu") -> LatencyProfile:
    """Re-measure a bundle's latency profile on this device, keeping its accuracies."""
    bundle = load_bundle(bundle_dir)
    accs = {s.id: {"val": s.val_accuracy, "test": s.test_accuracy} for s in bundle.profile.subnets}
    torch.set_num_threads(threads)
    configs = bundle.configs()
    profile = measure_profile(bundle.model, configs, accs, max_batch, repeats, device=device,
                              progress=progress)
    profile.save(out)
    return profile
