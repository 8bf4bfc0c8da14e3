"""SubNetAct side by side: switching SubNets inside one resident SuperNet vs loading extracted
SubNets from disk, and the memory of both for the served (Pareto) set.

    python -m benchmarks.subnetact [--bundle DIR] [--switches 20000] [--forward-repeats 15]
    python -m benchmarks.subnetact --arch resnet50|mbv3-w1.0|mbv3-w1.2|proxyless   (an imported OFA SuperNet)

forward_ratio_vs_extracted: max (and argmax, median) over the served SubNets and batch sizes
1..16 of the SuperNet's forward time over the extracted model's, timed interleaved.

Writes benchmarks/results/subnetact.json (with --arch: benchmarks/ofa.py's figures for that
architecture, in benchmarks/results/ofa.json).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._common import rel
from superserve.embedded import EMBEDDED_DIR, load_bundle
from superserve.profiling.measure import percentile, time_batches
from superserve.scheduling.conventions import spanning_subnets
from superserve.supernet import (SuperResNet, calibrate, extract, imagenet_resnet50_spec, load_extracted,
                                  save_extracted, subnet_cost)

RESULTS = Path(__file__).parent / "results"


def model_bytes(model: torch.nn.Module) -> int:
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def imagenet_family_memory(samples: int = 300, seed: int = 0) -> dict:
    """The paper's six-SubNet comparison on an ImageNet-size member of the same family
    (OFA-ResNet-50-like dimensions). Memory depends only on shapes, so the weights are random;
    with no accuracy for random weights, the six span the FLOPs range evenly (the smallest and
    largest of the space included), standing in for OFA's accuracy-spanning six (OFA's
    accuracy grows with FLOPs)."""
    spec = imagenet_resnet50_spec()
    rng = random.Random(seed)
    pool = {c.id: c for c in [spec.smallest(), spec.largest()] + [spec.sample(rng) for _ in range(samples)]}
    macs = {sid: subnet_cost(spec, c)[0] for sid, c in pool.items()}
    lo, hi = min(macs.values()), max(macs.values())
    six = [min(pool, key=lambda sid: abs(macs[sid] - (lo + (hi - lo) * k / 5))) for k in range(6)]
    torch.manual_seed(seed)
    model = SuperResNet(spec).eval()
    configs = [pool[sid] for sid in six]
    x = torch.randn(2, spec.in_channels, spec.input_size, spec.input_size)
    calibrate(model, configs, lambda: [x])  # one row per SubNet: the table's size, not its values
    six_bytes = sum(model_bytes(extract(model, c)) for c in configs)
    supernet_bytes = model.weight_bytes() + model.norm_table_bytes()
    return {"spec": "imagenet_resnet50_spec (224x224x3, 1000 classes), random weights",
            "six_ids": six, "six_gmacs": [round(macs[sid] / 1e9, 2) for sid in six],
            "supernet_bytes": supernet_bytes, "six_extracted_bytes": six_bytes,
            "ratio_vs_six": round(six_bytes / supernet_bytes, 3)}


def forward_vs_extracted(model, bundle, ids: list[str], max_batch: int, repeats: int,
                         limit: int = 0, warmup: int = 2, confirm: int = 16) -> dict:
    """supernet_ms / extracted_ms of every (served SubNet, batch 1..max_batch) cell.

    Interleaved: each round times every cell once, SuperNet and extracted model back to back
    (their order alternating between rounds), so a disturbance hits both sides alike; each
    side's time is the median over the rounds. One thread, inference mode, as a worker runs."""
    configs = {c.id: c for c in bundle.configs()}
    if limit and limit < len(ids):
        by_size = sorted(ids, key=lambda sid: model.subnet_cost(configs[sid])[0])
        ids = [by_size[round(k * (len(by_size) - 1) / max(1, limit - 1))] for k in range(limit)]
    shape = (model.spec.in_channels, model.spec.input_size, model.spec.input_size)
    inputs = {b: torch.randn(b, *shape) for b in range(1, max_batch + 1)}
    extracted = {sid: extract(model, configs[sid]) for sid in ids}
    cells = [(sid, b) for sid in ids for b in range(1, max_batch + 1)]
    sup: dict = {c: [] for c in cells}
    ext: dict = {c: [] for c in cells}
    clock = time.perf_counter

    def timed(cells_: list, rounds: int) -> None:
        for c in cells_:
            sup[c], ext[c] = [], []
        with torch.inference_mode():
            for r in range(warmup + rounds):
                for sid, b in cells_:
                    x, plain = inputs[b], extracted[sid]
                    model.actuate(sid)
                    sides = ((model, sup), (plain, ext)) if r % 2 == 0 else ((plain, ext), (model, sup))
                    for net, log in sides:
                        t0 = clock()
                        net(x)
                        dt = (clock() - t0) * 1e3
                        if r >= warmup:
                            log[(sid, b)].append(dt)

    def ratio(c) -> float:
        return statistics.median(sup[c]) / statistics.median(ext[c])

    timed(cells, repeats)
    first = {c: ratio(c) for c in cells}
    worst_first = sorted(cells, key=first.get, reverse=True)[:confirm]
    if worst_first:
        timed(worst_first, 3 * repeats)
    out: dict = {sid: {} for sid in ids}
    ratios = {}
    for sid, b in cells:
        s_ms, e_ms = statistics.median(sup[(sid, b)]), statistics.median(ext[(sid, b)])
        ratios[(sid, b)] = s_ms / e_ms
        out[sid][f"b{b}"] = {"supernet_ms": round(s_ms, 4), "extracted_ms": round(e_ms, 4),
                             "ratio": round(s_ms / e_ms, 3)}
    worst = max(ratios, key=ratios.get)
    summary = {"max": round(ratios[worst], 3), "argmax_subnet": worst[0], "argmax_batch": worst[1],
               "max_first_pass": round(max(first.values()), 3),
               "confirmed_cells": [[sid, b, round(first[(sid, b)], 3), round(ratios[(sid, b)], 3)]
                                   for sid, b in worst_first],
               "median": round(statistics.median(ratios.values()), 3),
               "min": round(min(ratios.values()), 3),
               "subnets": len(ids), "batches": f"1..{max_batch}", "repeats": repeats,
               "compared": "SuperNet (compiled per-SubNet program over weight views) vs extracted "
                           "plain nn.Module model; neither folds BatchNorm"}
    return {"summary": summary, "cells": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle", type=Path, default=EMBEDDED_DIR)
    ap.add_argument("--switches", type=int, default=20000)
    ap.add_argument("--loads", type=int, default=20)
    ap.add_argument("--out", type=Path, default=RESULTS / "subnetact.json")
    ap.add_argument("--forward-repeats", type=int, default=15,
                    help="interleaved rounds of the SuperNet-vs-extracted forward comparison (medians)")
    ap.add_argument("--forward-batches", type=int, default=16, help="batch sizes 1..N in that comparison")
    ap.add_argument("--forward-confirm", type=int, default=16,
                    help="re-time this many worst cells with 3x the rounds (noise check; 0: off)")
    ap.add_argument("--forward-subnets", type=int, default=0,
                    help="compare only this many served SubNets, spread over the size range (0: all)")
    ap.add_argument("--arch", choices=["resnet50", "mbv3-w1.0", "mbv3-w1.2", "proxyless"],
                    help="measure an imported Once-for-All SuperNet instead (runs benchmarks.ofa)")
    args = ap.parse_args()
    if args.arch:
        from benchmarks.ofa import main as ofa_main

        ofa_main(["--arch", args.arch])
        return
    torch.set_num_threads(1)

    bundle = load_bundle(args.bundle)
    model, profile = bundle.model, bundle.profile
    ids = [s.id for s in profile.subnets]
    for sid in ids:  # the server prepares every served plan at start-up
        model.actuate(sid)

    # Actuation: switch to a random served SubNet, many times, one timing per switch.
    rng = random.Random(0)
    order = [rng.choice(ids) for _ in range(args.switches)]
    clock = time.perf_counter_ns
    act_ns = []
    for sid in order:
        t0 = clock()
        model.actuate(sid)
        act_ns.append(clock() - t0)
    act_us = [v / 1e3 for v in act_ns]

    # Loading: one extracted SubNet (the median-size one) from disk into a ready model.
    mid = sorted(profile.subnets, key=lambda s: s.params)[len(ids) // 2]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "subnet.safetensors"
        save_extracted(extract(model, bundle.configs()[ids.index(mid.id)]), path)
        load_ms = []
        x = torch.randn(1, 1, 28, 28)
        for _ in range(args.loads):
            t0 = time.perf_counter()
            loaded = load_extracted(path)
            with torch.inference_mode():
                loaded(x)  # ready means it has answered once
            load_ms.append((time.perf_counter() - t0) * 1e3)

    # Memory: the SuperNet (weights + whole SubnetNorm table) vs the extracted models.
    configs = {c.id: c for c in bundle.configs()}
    extracted_bytes = {sid: model_bytes(extract(model, configs[sid])) for sid in ids}
    supernet_bytes = model.weight_bytes() + model.norm_table_bytes()
    six = spanning_subnets(profile, 6)
    six_bytes = sum(extracted_bytes[sid] for sid in six)

    # Cost of WeightSlice at run time: each served SubNet actuated in the SuperNet vs the same
    # SubNet extracted (plain nn.Module model, BatchNorm unfolded in both), same inputs.
    program_bytes = model.prepare(ids)  # what the server's warm-up compiles, before timing
    forward = forward_vs_extracted(model, bundle, ids, args.forward_batches, args.forward_repeats,
                                   args.forward_subnets, confirm=args.forward_confirm)
    slice_cost = {sid: {f"b{b}": forward["cells"][sid][f"b{b}"] for b in (1, args.forward_batches)}
                  for sid in (profile.smallest.id, profile.largest.id) if sid in forward["cells"]}

    result = {
        "bundle": rel(args.bundle),
        "num_subnets": len(ids),
        "actuation_us_p50": round(percentile(act_us, 50), 3),
        "actuation_us_p99": round(percentile(act_us, 99), 3),
        "actuation_switches": len(act_us),
        "load_extracted_ms_p50": round(percentile(load_ms, 50), 3),
        "load_extracted_subnet": mid.id,
        "load_over_actuation": round(percentile(load_ms, 50) * 1e3 / percentile(act_us, 50), 1),
        "memory_supernet_bytes": supernet_bytes,
        "memory_supernet_weights_bytes": model.weight_bytes(),
        "memory_norm_table_bytes": model.norm_table_bytes(),
        "memory_extracted_bytes": sum(extracted_bytes.values()),
        "memory_ratio": round(sum(extracted_bytes.values()) / supernet_bytes, 3),
        "memory_six_ids": six,
        "memory_six_extracted_bytes": six_bytes,
        "memory_ratio_vs_six": round(six_bytes / supernet_bytes, 3),
        "weights_over_norm_table": round(model.weight_bytes() / max(1, model.norm_table_bytes()), 1),
        "imagenet_size_family": imagenet_family_memory(),
        "memory_programs_bytes": program_bytes,
        "memory_ratio_with_programs": round(sum(extracted_bytes.values()) / (supernet_bytes + program_bytes), 3),
        "forward_ratio_vs_extracted": forward["summary"]["max"],  # max over SubNets and batches
        "forward_ratio_detail": forward["summary"],
        "forward_supernet_vs_extracted": slice_cost,
        "forward_all_cells": forward["cells"],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    width = max(len(k) for k in result)
    for k, v in result.items():
        if not isinstance(v, (dict, list)):
            print(f"{k:<{width}}  {v}")
    print(f"{'forward_ratio_detail':<{width}}  {result['forward_ratio_detail']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
