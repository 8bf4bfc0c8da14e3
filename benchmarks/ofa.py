"""Imported Once-for-All SuperNets: equality with the `ofa` reference, memory against six
extracted SubNets, actuation and extracted-model load times.

    python -m benchmarks.ofa [--arch resnet50 --arch mbv3-w1.0 ...] [--samples 28]

Per architecture:
* equivalence: a random `ofa` SuperNet (OFA's published constructor) written as an OFA
  checkpoint and imported; seeded random SubNets plus the smallest and largest compared with
  `ofa`'s dynamic forward and its extraction (benchmarks/_ofa_reference.py; 32 and 48 px), in
  float64 (the headline) and float32 (for context, with the reference's own sensitivity).
* memory at ImageNet size (224 x 224, 1000 classes; random weights: memory depends on shapes
  only): SuperNet weights + SubnetNorm table vs six extracted SubNets spanning the published
  accuracy range. OFA's README publishes accuracy, parameters and MACs of specialised SubNets
  but not their control tuples (those are downloaded), so each of the six is the SubNet of
  this space nearest to a published (parameters, MACs) pair; the published accuracy is
  carried along. Also the resident memory (RSS) of one process holding the SuperNet vs one
  holding the six extracted models.
* actuation: switching among 500 prepared SubNets (p50/p99 of one switch), and the time to
  load one extracted SubNet from disk until it has answered once.

Writes benchmarks/results/ofa.json.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._ofa_reference import equivalence
from superserve.profiling.measure import percentile
from superserve.supernet import calibrate, save_norm_table, save_weights
from superserve.supernet.ofa.base import OFASuperNet
from superserve.supernet.ofa.extract import extract_ofa, load_extracted_ofa, save_extracted_ofa
from superserve.supernet.ofa.models import build_ofa, ofa_spec

RESULTS = Path(__file__).parent / "results"
README = "https://github.com/mit-han-lab/once-for-all#how-to-use--evaluate-ofa-specialized-networks"
# OFA README, "OFA Specialized Networks": (top-1 %, parameters in M, MACs in M) of the
# specialised SubNets. ResNet50D: the ResNet50 design space rows. MobileNetV3: the rows of
# 25-epoch fine-tuned mobile SubNets whose size fits the w1.0 SuperNet (<= 7.7 M parameters;
# the 75-epoch rows have 9 M and belong to the w1.2 space).
PUBLISHED = {
    "resnet50": [(79.8, 30.9, 4100), (79.7, 26.5, 3700), (79.3, 28.7, 3000), (79.0, 29.0, 2400),
                 (78.3, 20.7, 1800), (77.1, 19.3, 1200), (76.3, 14.5, 900), (75.0, 9.6, 600)],
    "mbv3-w1.0": [(76.4, 5.8, 230), (74.7, 5.8, 151), (73.0, 5.0, 103), (71.1, 4.1, 74),
                  (76.3, 6.4, 219), (74.7, 4.6, 145), (73.1, 4.7, 96), (70.5, 3.8, 66),
                  (76.1, 5.3, 220), (74.9, 6.0, 164), (72.8, 4.6, 101), (70.4, 4.3, 67),
                  (76.6, 5.9, 237), (75.5, 4.9, 163), (73.6, 4.3, 110), (71.4, 3.8, 79)],
}
RESOLUTIONS = tuple(range(128, 225, 16))  # OFA's published resolution range, 128-224


def tensor_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def spanning_published(rows: list[tuple[float, float, float]], count: int = 6) -> list[tuple[float, float, float]]:
    """``count`` published rows whose accuracies span the published range evenly."""
    rows = sorted(rows)
    lo, hi, chosen = rows[0][0], rows[-1][0], []
    for k in range(count):
        target = lo + (hi - lo) * k / (count - 1)
        chosen.append(min((r for r in rows if r not in chosen), key=lambda r: abs(r[0] - target)))
    return sorted(chosen)


def matched_subnets(model: OFASuperNet, rows, pool_size: int, seed: int) -> list[tuple]:
    """For each published row, the pool SubNet nearest in log(parameters) and log(MACs)."""
    space, rng = model.space, random.Random(seed)
    pool = {c.id: c for c in [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(pool_size)]}
    costs = {sid: model.subnet_cost(c) for sid, c in pool.items()}
    out = []
    for acc, params_m, macs_m in rows:
        sid = min(pool, key=lambda s: abs(math.log(costs[s][1] / (params_m * 1e6)))
                  + abs(math.log(costs[s][0] / (macs_m * 1e6))))
        out.append((pool[sid], acc, params_m, macs_m, costs[sid]))
    return out


def rss_child(mode: str, paths: list[str]) -> None:
    """Run in a fresh process: print the RSS growth (bytes) from loading a SuperNet bundle
    (mode 'supernet': weights, norm table) or extracted SubNets (mode 'extracted')."""
    import psutil

    from superserve.supernet import load_supernet

    proc = psutil.Process()
    before = proc.memory_info().rss
    if mode == "supernet":
        held = [load_supernet(paths[0], paths[1])]
    else:
        held = [load_extracted_ofa(p) for p in paths]
    print(json.dumps({"rss_growth_bytes": proc.memory_info().rss - before, "models": len(held)}))


def _rss(mode: str, paths: list[str]) -> int:
    out = subprocess.run([sys.executable, "-m", "benchmarks.ofa", "--rss-child", mode, *paths],
                         check=True, capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    return int(json.loads(out.stdout.strip().splitlines()[-1])["rss_growth_bytes"])


def norm_row_bytes(model: OFASuperNet, choice) -> int:
    """Bytes one SubNet adds to the SubnetNorm table: mean and variance of every channel it
    normalises (counted in one training-mode pass), plus one offset per norm layer."""
    counts: list[int] = []
    norms = [m for _, m in model.norm_modules()]
    hooks = [m.register_forward_pre_hook(lambda m, args: counts.append(args[0].shape[1])) for m in norms]
    try:
        model.actuate(choice)
        model.train()
        with torch.no_grad():
            model(torch.zeros(2, 3, model.active.resolution, model.active.resolution))
    finally:
        for h in hooks:
            h.remove()
        model.eval()
    return 4 * 2 * sum(counts) + 8 * len(norms)


def memory_and_actuation(arch: str, pool_size: int, served: int, seed: int, switches: int, loads: int) -> dict:
    torch.manual_seed(seed)
    model = build_ofa(ofa_spec(arch, 1000, 224, RESOLUTIONS)).eval()
    six_rows = spanning_published(PUBLISHED[arch])
    six = matched_subnets(model, six_rows, pool_size, seed)
    configs = [c for c, *_ in six]
    x = torch.randn(4, 3, 224, 224)
    calibrate(model, configs, lambda: [x])  # the table's size, not its values, matters here
    model.eval()
    six_bytes = [tensor_bytes(extract_ofa(model, c.id)) for c in configs]
    weights, table = model.weight_bytes(), model.norm_table_bytes()

    # A served set of `served` SubNets (the six among them): table bytes per row, counted.
    rng = random.Random(seed + 1)
    ids = [c.id for c in configs]
    while len(ids) < served:
        c = model.space.sample(rng)
        if c.id not in ids:
            ids.append(c.id)
    for sid in ids:
        model.actuate(sid)  # prepares its plan, as a server does at start-up
    rows = {c.id: norm_row_bytes(model, c) for c in configs}
    assert sum(rows.values()) == table, "row accounting differs from the calibrated table"
    largest_row = norm_row_bytes(model, model.space.largest())

    order = [rng.choice(ids) for _ in range(switches)]
    clock, act_ns = time.perf_counter_ns, []
    for sid in order:
        t0 = clock()
        model.actuate(sid)
        act_ns.append(clock() - t0)
    act_us = [v / 1e3 for v in act_ns]

    with tempfile.TemporaryDirectory() as tmp:
        bundle_w, bundle_n = Path(tmp) / "weights.safetensors", Path(tmp) / "subnetnorm.safetensors"
        save_weights(model, bundle_w)
        save_norm_table(model, bundle_n)
        paths = []
        for i, c in enumerate(configs):
            paths.append(str(Path(tmp) / f"subnet{i}.safetensors"))
            save_extracted_ofa(model, c.id, paths[-1])
        mid = paths[len(paths) // 2]
        load_ms = []
        for _ in range(loads):
            t0 = time.perf_counter()
            loaded = load_extracted_ofa(mid)
            with torch.inference_mode():
                loaded(torch.randn(1, 3, loaded.resolution, loaded.resolution))
            load_ms.append((time.perf_counter() - t0) * 1e3)
        rss_supernet = _rss("supernet", [str(bundle_w), str(bundle_n)])
        rss_six = _rss("extracted", paths)

    supernet_bytes = weights + table
    return {
        "accuracy_source": f"OFA README specialised-network table ({README}); SubNets matched on "
                           "(parameters, MACs), their control tuples are not published",
        "six": [{"id": c.id, "published_top1": acc, "published_params_m": p_m, "published_macs_m": m_m,
                 "params_m": round(params / 1e6, 2), "macs_m": round(macs / 1e6, 1), "extracted_bytes": b}
                for (c, acc, p_m, m_m, (macs, params)), b in zip(six, six_bytes)],
        "supernet_weights_bytes": weights,
        "norm_table_bytes_six": table,
        "six_extracted_bytes": sum(six_bytes),
        "memory_ratio_vs_six": round(sum(six_bytes) / supernet_bytes, 3),
        "memory_ratio_vs_six_published_params": round(sum(r[1] for r in six_rows) * 1e6 * 4 / supernet_bytes, 3),
        "norm_row_bytes_six": list(rows.values()),
        "norm_row_bytes_largest": largest_row,
        f"memory_ratio_vs_six_with_{served}_rows_of_the_largest":
            round(sum(six_bytes) / (weights + served * largest_row), 3),
        "rss_supernet_bytes": rss_supernet,
        "rss_six_extracted_bytes": rss_six,
        "rss_ratio_vs_six": round(rss_six / rss_supernet, 3),
        "served_subnets_prepared": len(ids),
        "actuation_us_p50": round(percentile(act_us, 50), 3),
        "actuation_us_p99": round(percentile(act_us, 99), 3),
        "actuation_switches": len(act_us),
        "load_extracted_ms_p50": round(percentile(load_ms, 50), 1),
        "load_extracted_subnet": configs[len(configs) // 2].id,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", action="append", choices=["resnet50", "mbv3-w1.0", "mbv3-w1.2", "proxyless"])
    ap.add_argument("--samples", type=int, default=28, help="random SubNets compared (plus smallest, largest)")
    ap.add_argument("--pool", type=int, default=3000, help="SubNets searched for the six matches")
    ap.add_argument("--served", type=int, default=500, help="SubNets prepared for actuation")
    ap.add_argument("--switches", type=int, default=20000)
    ap.add_argument("--loads", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "ofa.json")
    ap.add_argument("--rss-child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rss_child:
        rss_child(args.rss_child[0], args.rss_child[1:])
        return
    torch.set_num_threads(1)
    archs = args.arch or ["resnet50", "mbv3-w1.0", "mbv3-w1.2", "proxyless"]
    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    result.setdefault("architectures", {})
    for arch in archs:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            eq = equivalence(arch, Path(tmp), samples=args.samples, resolutions=(32, 48), seed=args.seed)
            eq32 = equivalence(arch, Path(tmp), samples=args.samples, resolutions=(32, 48), seed=args.seed,
                               calib_images=16, dtype=torch.float32)
        entry = {"subnets_checked": eq["subnets_checked"],
                 "max_abs_diff_vs_reference": max(eq["max_abs_diff"]["vs_ofa_forward"],
                                                  eq["max_abs_diff"]["vs_ofa_extraction"]),
                 "equivalence": eq, "equivalence_float32": eq32}
        if arch in PUBLISHED:
            entry.update(memory_and_actuation(arch, args.pool, args.served, args.seed, args.switches, args.loads))
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        result["architectures"][arch] = entry
        for k, v in entry.items():
            if not isinstance(v, (dict, list)):
                print(f"{arch:<10} {k:<48} {v}")
    result.update({"torch": torch.__version__, "threads": torch.get_num_threads(),
                   "reference": "PyPI ofa (--no-deps; torchvision and gdown stood in), random weights"})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
