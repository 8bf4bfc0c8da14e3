"""SubGraph Stationary (issue 16): cache-aware SubNet + SubGraph scheduling on a modelled
accelerator with an on-chip weight buffer, against the same policy with no cache, an LRU cache
of whole layers and a static cache of the smallest SubNet; the cost model checked against this
CPU; and whether SubGraph locality pays on this CPU's hardware-managed cache.

    python -m benchmarks.subgraph [--quick] [--skip-cpu]

Writes benchmarks/results/subgraph.json ({"architectures": {arch: ...}, ...}). Our design of
the SUSHI idea: the accelerator is modelled (roofline, superserve/subgraph/cost.py), SUSHI's
figures were measured on an FPGA; both are printed side by side.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from benchmarks._common import RESULTS, write_json
from superserve.bundle_layout import EMBEDDED_DIR
from superserve.scheduling.profile import LatencyProfile
from superserve.sim import IN_TIME
from superserve.subgraph import (ZCU104_INT8, Accelerator, AdaptiveSubGraph, Catalog, CostTable, LayerLRU, NoCache,
                                 PolicyConfig, Queries, RunResult, WeightCache, intersect, latency_s,
                                 layer_fetch_bytes, serve, static_smallest)
from superserve.subgraph.mbv3_torch import SharedMbV3
from superserve.subgraph.ofa_mbv3 import MbV3Config, mbv3_catalog, mbv3_extents, mbv3_space
from superserve.subgraph.ofa_proxyless import proxyless_catalog
from superserve.subgraph.resnet_space import resnet_catalog
from superserve.supernet.config import fashion_mnist_spec
from superserve.workload import bursty, time_varying

POLICIES = ("cache_aware", "no_cache", "lru_layers", "static_smallest")
BUFFER_FRACTION = 0.5  # headline buffer: half the weight bytes of the largest SubNet (fixed before any run)
SWEEP_FRACTIONS = (0.125, 0.25, 0.5, 1.0)
SLO_MULTIPLES = (1.5, 3.0, 6.0)  # per-query SLO: one of these x the largest SubNet's no-cache latency
FLOOR_SHARE = 0.25  # share of queries with an accuracy floor (the catalog's median accuracy)
LOCALITY_RESOLUTIONS = (224, 128)  # OFA's largest and smallest input size: weights matter more at 128
SUSHI_PUBLISHED = {
    "source": "SUSHI (Behnam, Tong, Khare, et al., MLSys 2023; arXiv 2306.17266), abstract",
    "latency_reduction": "up to 25 % (abstract; 25-32 % across the versions quoted in the issue)",
    "served_accuracy_gain_pts": 0.98,
    "offchip_energy_saving": 0.787,
    "how": "measured on their FPGA accelerator (SushiAccel) and simulator; ours is a roofline model",
}


def make_caches(cat: Catalog, buffer_bytes: int) -> dict[str, Callable[[], WeightCache]]:
    return {"cache_aware": lambda: AdaptiveSubGraph(cat, buffer_bytes),
            "no_cache": lambda: NoCache(cat, buffer_bytes),
            "lru_layers": lambda: LayerLRU(cat, buffer_bytes),
            "static_smallest": lambda: static_smallest(cat, buffer_bytes)}


def workloads(cat: Catalog, acc: Accelerator, scale: float, seed: int = 0) -> tuple[dict[str, Queries], dict]:
    """The time-varying ramp and the bursty trace of superserve.workload at rates relative to
    the capacity C (1 / no-cache latency of the median SubNet, batch 1); time in units of
    1,000 / C seconds so every architecture sees about the same number of queries."""
    lat = latency_s(CostTable.build(cat, acc), acc, layer_fetch_bytes(cat, cat.space.empty()))
    cap, lmax = 1.0 / float(np.median(lat)), float(lat.max())
    u = scale * 1000.0 / cap
    traces = {"time_varying": time_varying(0.5 * cap, 1.1 * cap, 0.6 * cap / (4 * u), 8.0, hold_start_s=2 * u,
                                           hold_end_s=4 * u, seed=seed),
              "bursty": bursty(0.4 * cap, 0.5 * cap, 8.0, 10 * u, seed=seed + 1)}
    floor = float(np.median(cat.accuracy))
    out = {}
    for k, (name, tr) in enumerate(traces.items()):
        rng = np.random.default_rng(seed + 10 + k)
        n = len(tr)
        out[name] = Queries(tr.arrivals, rng.choice(SLO_MULTIPLES, n) * lmax,
                            np.where(rng.uniform(size=n) < FLOOR_SHARE, floor, 0.0), {"trace": tr.summary()})
    info = {"capacity_qps": cap, "largest_latency_ms": lmax * 1e3, "time_unit_s": u,
            "slo_ms_choices": [m * lmax * 1e3 for m in SLO_MULTIPLES], "floor_share": FLOOR_SHARE,
            "floor_accuracy": floor,
            "time_varying": "0.5 C for 2 units, ramp to 1.1 C over 4 units, hold 4 units; CV^2 8",
            "bursty": "0.4 C constant + 0.5 C Gamma stream CV^2 8, 10 units"}
    return out, info


def pooled(runs: list[RunResult], acc: Accelerator) -> dict[str, Any]:
    """One policy's figures over every workload (queries pooled)."""
    lat = np.concatenate([r.latencies_ms() for r in runs])
    served = sum(r.served for r in runs)
    total = sum(r.sim.num_requests for r in runs)
    in_time = sum(r.sim.count(IN_TIME) for r in runs)
    acc_sum = sum(r.sim.mean_accuracy * r.sim.count(IN_TIME) for r in runs if r.sim.count(IN_TIME))
    off = sum(r.offchip_bytes for r in runs)
    on = sum(r.onchip_bytes for r in runs)
    return {"latency_mean_ms": float(lat.mean()), "latency_p99_ms": float(np.percentile(lat, 99)),
            "service_mean_ms": float(np.concatenate([r.service_s for r in runs]).mean() * 1e3),
            "service_p99_ms": float(np.percentile(np.concatenate([r.service_s for r in runs]), 99) * 1e3),
            "offchip_bytes_per_query": off / served,
            "offchip_energy_uj_per_query": off * acc.offchip_pj_per_byte * 1e-6 / served,
            "total_weight_energy_uj_per_query": (off * acc.offchip_pj_per_byte + on * acc.onchip_pj_per_byte)
            * 1e-6 / served,
            "mean_accuracy": acc_sum / in_time, "slo_attainment": in_time / total, "queries": total, "served": served,
            "subgraph_loads": sum(r.loads for r in runs)}


def savings(ours: dict, base: dict) -> dict[str, float]:
    rel = lambda k: 1.0 - ours[k] / base[k] if base[k] else 0.0  # noqa: E731
    return {"latency_mean": rel("latency_mean_ms"), "latency_p99": rel("latency_p99_ms"),
            "service_time": rel("service_mean_ms"), "service_time_p99": rel("service_p99_ms"),
            "offchip_bytes": rel("offchip_bytes_per_query"), "offchip_energy": rel("offchip_energy_uj_per_query"),
            "accuracy_gain_pts": 100 * (ours["mean_accuracy"] - base["mean_accuracy"]),
            "slo_attainment_gain": ours["slo_attainment"] - base["slo_attainment"]}


def study(name: str, cat: Catalog, acc: Accelerator, scale: float) -> dict[str, Any]:
    wb = cat.weight_bytes()
    buffer_bytes = int(BUFFER_FRACTION * wb.max())
    loads, info = workloads(cat, acc, scale)
    print(f"\n== {name}: {len(cat)} SubNets, {wb.min() / 1e6:.3f}-{wb.max() / 1e6:.3f} MB of weights, "
          f"accuracy {cat.accuracy.min():.4f}-{cat.accuracy.max():.4f}; buffer {buffer_bytes / 1e6:.3f} MB; "
          f"C = {info['capacity_qps']:.0f} q/s")
    per_load: dict[str, dict[str, dict]] = {}
    runs: dict[str, list[RunResult]] = {p: [] for p in POLICIES}
    for wname, q in loads.items():
        per_load[wname] = {}
        for pname, make in make_caches(cat, buffer_bytes).items():
            t0 = time.perf_counter()
            r = serve(cat, acc, make(), q)
            runs[pname].append(r)
            per_load[wname][pname] = r.summary(acc)
            s = per_load[wname][pname]
            print(f"  {wname:12s} {pname:16s} lat {s['latency_mean_ms']:.4f}/{s['latency_p99_ms']:.4f} ms "
                  f"(service {s['service_mean_ms']:.4f})  "
                  f"off-chip {s['offchip_bytes_per_query'] / 1e3:9.1f} KB/q  acc {s['mean_accuracy']:.4f}  "
                  f"SLO {s['slo_attainment']:.4f}  ({time.perf_counter() - t0:.1f} s)")
    policies = {p: pooled(rs, acc) for p, rs in runs.items()}
    # Equal accuracy by construction: the SubNets each policy served, timed without a cache (what
    # the cache itself saved, before the policy spends any of it on more accurate SubNets), and
    # the accelerator time SubGraph loads stalled, per served query.
    lat_none = latency_s(CostTable.build(cat, acc), acc, layer_fetch_bytes(cat, cat.space.empty()))
    for p, rs in runs.items():
        chosen = np.concatenate([r.sim.subnet[r.sim.subnet >= 0] for r in rs])
        policies[p]["service_mean_ms_same_subnets_no_cache"] = float(lat_none[chosen].mean() * 1e3)
        policies[p]["load_stall_ms_per_query"] = float(sum(r.load_bytes for r in rs) / acc.offchip_bytes_per_s
                                                       / sum(r.served for r in rs) * 1e3)
    # ablation: the same adaptive SubGraph without trading any accuracy for locality
    strict = [serve(cat, acc, AdaptiveSubGraph(cat, buffer_bytes), q, PolicyConfig(accuracy_slack=0.0))
              for q in loads.values()]
    ours = policies["cache_aware"]
    best = {k: min((p for p in POLICIES[1:]), key=lambda p: policies[p][k])
            for k in ("latency_mean_ms", "offchip_bytes_per_query")}
    out = {
        "catalog": {**cat.meta, "subnets": len(cat), "weight_bytes_min": int(wb.min()),
                    "weight_bytes_max": int(wb.max()),
                    "accuracy_min": float(cat.accuracy.min()), "accuracy_max": float(cat.accuracy.max()),
                    "layers": len(cat.space.layers), "tensors": len(cat.space)},
        "buffer_bytes": buffer_bytes, "buffer_rule": f"{BUFFER_FRACTION} x the largest SubNet's weight bytes",
        "workload": info, "policies": policies, "per_workload": per_load,
        "savings_vs_no_cache": savings(ours, policies["no_cache"]),
        "savings_vs_best_baseline": {
            "by_latency": {"baseline": best["latency_mean_ms"], **savings(ours, policies[best["latency_mean_ms"]])},
            "by_offchip_bytes": {"baseline": best["offchip_bytes_per_query"],
                                 **savings(ours, policies[best["offchip_bytes_per_query"]])}},
        "ablation_cache_aware_without_accuracy_trade": pooled(strict, acc),
        "roofline": roofline(cat, acc),
        "buffer_sweep": sweep(cat, acc, workloads(cat, acc, scale / 2)[0]["time_varying"]),
    }
    sv, rf = out["savings_vs_no_cache"], out["roofline"]
    print(f"  roofline: ridge {rf['ridge_macs_per_byte']:.0f} MAC/byte; SubNets at "
          f"{rf['macs_per_weight_byte']['min']:.0f}-{rf['macs_per_weight_byte']['max']:.0f} MAC/byte; "
          f"memory-bound share of no-cache time (median) {100 * rf['memory_bound_time_share_no_cache']['median']:.1f} %;"
          f" all-cached saves at most {100 * rf['max_saving_if_all_cached']['max']:.1f} %")
    print(f"  cache_aware vs no_cache: latency {100 * sv['latency_mean']:.1f} % (p99 {100 * sv['latency_p99']:.1f} %, "
          f"service time {100 * sv['service_time']:.1f} %), "
          f"off-chip bytes/energy {100 * sv['offchip_bytes']:.1f} %, accuracy {sv['accuracy_gain_pts']:+.2f} pts, "
          f"SLO {sv['slo_attainment_gain']:+.4f}")
    ca = policies["cache_aware"]
    print(f"  cache_aware's own SubNets: service {ca['service_mean_ms']:.4f} ms with its cache (+ "
          f"{ca['load_stall_ms_per_query']:.4f} ms of loads) against {ca['service_mean_ms_same_subnets_no_cache']:.4f}"
          f" ms without one")
    return out


def roofline(cat: Catalog, acc: Accelerator) -> dict[str, Any]:
    """Where the time goes without a cache, and the most any cache could save: per SubNet, its
    MACs per weight byte against the ridge point (MAC/s over bytes/s), the share of its no-cache
    time in memory-bound layers, and 1 - latency(everything cached) / latency(no cache)."""
    table = CostTable.build(cat, acc)
    none = layer_fetch_bytes(cat, cat.space.empty()).astype(np.float64)
    none[:, 0] += table.private_bytes
    mem = none / acc.offchip_bytes_per_s
    per_layer = np.maximum(table.compute_s, mem)
    bound = (mem > table.compute_s) & table.layer_used
    lat_none = latency_s(table, acc, layer_fetch_bytes(cat, cat.space.empty()))
    lat_full = latency_s(table, acc, layer_fetch_bytes(cat, cat.space.full))
    intensity = cat.macs() / cat.weight_bytes()
    q = lambda a: {"min": float(a.min()), "median": float(np.median(a)), "max": float(a.max())}  # noqa: E731
    return {"ridge_macs_per_byte": acc.macs_per_s / acc.offchip_bytes_per_s,
            "macs_per_weight_byte": q(intensity),
            "memory_bound_layers": q(bound.sum(axis=1).astype(float)),
            "layers_run": q(table.layer_used.sum(axis=1).astype(float)),
            "memory_bound_time_share_no_cache": q((per_layer * bound).sum(axis=1) / per_layer.sum(axis=1)),
            "max_saving_if_all_cached": q(1.0 - lat_full / lat_none)}


def sweep(cat: Catalog, acc: Accelerator, q: Queries) -> list[dict]:
    """Every cache at buffers of 1/8 to 1 x the largest SubNet (a half-length time-varying trace)."""
    rows = []
    for frac in SWEEP_FRACTIONS:
        b = int(frac * cat.weight_bytes().max())
        row: dict[str, Any] = {"buffer_fraction_of_largest": frac, "buffer_bytes": b}
        for pname, make in make_caches(cat, b).items():
            s = serve(cat, acc, make(), q).summary(acc)
            row[pname] = {k: s[k] for k in ("latency_mean_ms", "service_mean_ms", "offchip_bytes_per_query",
                                            "mean_accuracy", "slo_attainment")}
        rows.append(row)
        print(f"  sweep buffer {frac:5.3f} x largest: off-chip KB/q " + ", ".join(
            f"{p} {row[p]['offchip_bytes_per_query'] / 1e3:.1f}" for p in POLICIES))
    return rows


# --- the CPU: its parameters, the cost model against its latencies, and its cache -------------
def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


@torch.inference_mode()
def measure_cpu() -> dict[str, float]:
    """This CPU's roofline parameters at one thread: MAC/s of a large 1x1 convolution, DRAM
    read bandwidth (a sum over 256 MB, far beyond the last-level cache), and the fixed cost of
    one layer (a conv + batch norm + activation on a 1-channel 1x1 map)."""
    x = torch.randn(1, 256, 56, 56)
    w = torch.randn(256, 256, 1, 1)
    conv = lambda: F.conv2d(x, w)  # noqa: E731
    conv()
    macs_per_s = 256 * 256 * 56 * 56 / _median_time(conv, 15)
    big = torch.randn(64 * 2**20)
    big.sum()
    bw = big.numel() * 4 / _median_time(big.sum, 7)
    tiny, tw, one = torch.randn(1, 1, 1, 1), torch.randn(1, 1, 1, 1), torch.ones(1)
    layer = lambda: F.relu(F.batch_norm(F.conv2d(tiny, tw), one, one, one, one, False, 0.0, 1e-5))  # noqa: E731
    overhead = min(_median_time(layer, 2000) for _ in range(3))
    return {"macs_per_s": macs_per_s, "dram_bytes_per_s": bw, "layer_overhead_s": overhead}


def cpu_accelerator(p: dict[str, float], bandwidth: float) -> Accelerator:
    return Accelerator("this CPU, 1 thread, fp32", macs_per_s=p["macs_per_s"], offchip_bytes_per_s=bandwidth,
                       offchip_pj_per_byte=0.0, onchip_pj_per_byte=0.0, layer_overhead_s=p["layer_overhead_s"],
                       element_bytes=4, sources={"all": "measured by benchmarks/subgraph.py measure_cpu()"})


def compare(pred_s: np.ndarray, real_s: np.ndarray, macs: np.ndarray, layers: np.ndarray) -> dict[str, Any]:
    """Prediction vs measurement, and the two-parameter fit (effective MAC/s, per-layer cost)
    that shows whether the model's *shape* holds once its scale is calibrated."""
    ratio = real_s / pred_s
    a = np.stack([macs, layers], axis=1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(a, real_s, rcond=None)
    fit = a @ coef
    r2 = 1.0 - float(((real_s - fit) ** 2).sum() / ((real_s - real_s.mean()) ** 2).sum())
    return {"measured_over_predicted_median": float(np.median(ratio)),
            "measured_over_predicted_range": [float(ratio.min()), float(ratio.max())],
            "spearman_rho": float(stats.spearmanr(pred_s, real_s).statistic),
            "fit_effective_macs_per_s": float(1.0 / coef[0]) if coef[0] > 0 else None,
            "fit_layer_overhead_us": float(coef[1] * 1e6), "fit_r2": r2}


def cost_model_check(p: dict[str, float], ofa_real: dict[str, float], ofa_cat: Catalog) -> dict[str, Any]:
    """The roofline with this CPU's measured parameters against (a) the 67 embedded SubNets'
    batch-1 p50 in the shipped profile (measured on this machine class by `superserve profile`;
    their weights, under 5 MB, stay in the last-level cache: predicted with no DRAM traffic)
    and (b) OFA-MobileNetV3 SubNets measured here (warm: the bound with weights in cache, and
    with every weight from DRAM)."""
    profile = LatencyProfile.load(EMBEDDED_DIR / "profile.json")
    emb = resnet_catalog(fashion_mnist_spec(), profile, element_bytes=4)
    out: dict[str, Any] = {"cpu_parameters": p}
    for name, cat, real, dram in (("embedded_resnet", emb, {s.id: s.latency_p50_ms[0] / 1e3 for s in profile.subnets},
                                   False), ("ofa_mbv3", ofa_cat, ofa_real, True)):
        idx = np.array([cat.index_of(i) for i in real])
        table = CostTable.build(cat, cpu_accelerator(p, p["dram_bytes_per_s"]))
        layers = table.layer_used[idx].sum(axis=1)
        macs = cat.macs()[idx]
        y = np.array(list(real.values()))
        res: dict[str, Any] = {"subnets": len(idx), "real_ms": [float(v * 1e3) for v in y]}
        bounds = {"in_cache": cat.space.full, **({"from_dram": cat.space.empty()} if dram else {})}
        for bname, cached in bounds.items():
            acc = cpu_accelerator(p, p["dram_bytes_per_s"])
            pred = latency_s(table, acc, layer_fetch_bytes(cat, cached)[idx], idx)
            res[bname] = {"predicted_ms": [float(v * 1e3) for v in pred], **compare(pred, y, macs, layers)}
        out[name] = res
        print(f"  cost model vs CPU, {name}: measured/predicted median "
              f"{res['in_cache']['measured_over_predicted_median']:.2f}, Spearman "
              f"{res['in_cache']['spearman_rho']:.3f}, 2-parameter fit R^2 {res['in_cache']['fit_r2']:.3f}")
    return out


def _ofa_runner(cat: Catalog, input_size: int = 224) -> tuple[Callable[[str], float], torch.Tensor]:
    """A timed batch-1 forward of any catalog SubNet on the weight-shared executor (fp32, one
    thread), and a 128 MB buffer whose sum flushes the last-level cache (4 x its 32 MB)."""
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    model = SharedMbV3(input_size, seed=0).eval()
    x = torch.randn(1, 3, input_size, input_size)
    configs = {i: MbV3Config.from_id(i) for i in cat.ids}

    @torch.inference_mode()
    def run(sid: str) -> float:
        t0 = time.perf_counter()
        model(x, configs[sid])
        return time.perf_counter() - t0

    return run, torch.randn(32 * 2**20)


def measure_ofa(cat: Catalog, run: Callable[[str], float], repeats: int, every: int) -> dict[str, float]:
    """Warm batch-1 p50 (seconds) of every ``every``-th catalog SubNet, interleaved rounds."""
    ids = list(cat.ids[::every])
    for sid in ids:
        run(sid)
    samples: dict[str, list[float]] = {sid: [] for sid in ids}
    for _ in range(repeats):
        for sid in ids:
            run(sid)  # the second of two back-to-back runs is the warm one
            samples[sid].append(run(sid))
    return {sid: statistics.median(v) for sid, v in samples.items()}


def cpu_locality(cat: Catalog, input_size: int, cpu: dict[str, float], repeats: int, quick: bool) -> dict[str, Any]:
    """Latency of SubNet B right after SubNet A on this CPU, against the weight bytes they share.

    Per target B (the smallest, the median and the largest SubNet by bytes) and repeat,
    interleaved: flush (read 128 MB), run A, time B, for A among SubNets spread over the
    catalog, for A = B (everything shared) and for no A (nothing shared in cache). The slope of
    t(B after A) on the shared MB, pooled over the targets with each target's mean removed, is
    what each shared MB left in cache saves B. Beside it, what the roofline with this CPU's
    parameters predicts for B after itself versus after a flush (weights from cache or DRAM)."""
    run, flush_buf = _ofa_runner(cat, input_size)
    order = np.argsort(cat.weight_bytes())
    n = len(order)
    targets = [cat.ids[order[k]] for k in ((n // 2,) if quick else (0, n // 2, n - 1))]
    sources = [cat.ids[order[k]] for k in np.linspace(0, n - 1, 4 if quick else 7).round().astype(int)]
    mb = lambda nbytes: float(nbytes) / 2**20  # noqa: E731
    for sid in set(targets) | set(sources):
        run(sid)
    rows = []
    for b in targets:
        ib = cat.index_of(b)
        samples: dict[str, list[float]] = {a: [] for a in ["flush", "self"] + sources}
        for _ in range(repeats):
            for a in samples:
                flush_buf.sum()
                if a != "flush":
                    run(b if a == "self" else a)
                samples[a].append(run(b))
        for a, ts in samples.items():
            shared = 0 if a == "flush" else cat.weight_bytes()[ib] if a == "self" else \
                cat.space.nbytes(intersect(cat.boxes[cat.index_of(a)], cat.boxes[ib]))
            rows.append({"a": a, "b": b, "shared_mb": mb(shared), "b_mb": mb(cat.weight_bytes()[ib]),
                         "t_b_after_a_ms": 1e3 * statistics.median(ts)})
    xs, ys = [], []
    for b in targets:
        r = [row for row in rows if row["b"] == b]
        mx, my = np.mean([row["shared_mb"] for row in r]), np.mean([row["t_b_after_a_ms"] for row in r])
        xs += [row["shared_mb"] - mx for row in r]
        ys += [row["t_b_after_a_ms"] - my for row in r]
    fit = stats.linregress(xs, ys)
    space = mbv3_space(input_size, 4)
    tcat = Catalog(space, tuple(targets), np.stack([space.box(mbv3_extents(MbV3Config.from_id(b), input_size))
                                                    for b in targets]),
                   np.zeros(len(targets)), np.zeros(len(targets), dtype=np.int64), {})
    acc = cpu_accelerator(cpu, cpu["dram_bytes_per_s"])
    table = CostTable.build(tcat, acc)
    pred_gap = latency_s(table, acc, layer_fetch_bytes(tcat, space.empty())) - \
        latency_s(table, acc, layer_fetch_bytes(tcat, space.full))
    per_b = {b: {"b_mb": next(r["b_mb"] for r in rows if r["b"] == b),
                 "after_flush_ms": next(r["t_b_after_a_ms"] for r in rows if r["b"] == b and r["a"] == "flush"),
                 "after_itself_ms": next(r["t_b_after_a_ms"] for r in rows if r["b"] == b and r["a"] == "self"),
                 "roofline_predicted_saving_ms": float(1e3 * g)} for b, g in zip(targets, pred_gap)}
    print(f"  CPU locality at {input_size} px: slope {fit.slope:+.4f} +- {fit.stderr:.4f} ms per shared MB "
          f"(R^2 {fit.rvalue ** 2:.2f}); " + "; ".join(
              f"B of {v['b_mb']:.1f} MB: {v['after_flush_ms']:.2f} ms after a flush, {v['after_itself_ms']:.2f} "
              f"after itself (roofline: {v['roofline_predicted_saving_ms']:.2f} ms saved)" for v in per_b.values()))
    model_slope = -float(np.mean([v["roofline_predicted_saving_ms"] / v["b_mb"] for v in per_b.values()]))
    best = max(1.0 - v["after_itself_ms"] / v["after_flush_ms"] for v in per_b.values())
    reading = (f"slope {fit.slope:+.3f} +- {fit.stderr:.3f} ms per shared MB (negative: what B shares with A "
               f"saves time), {'' if fit.pvalue < 0.05 else 'not '}significant at 5 % (p {fit.pvalue:.2f}); the "
               f"roofline with this CPU's parameters expects {model_slope:+.3f}; B after itself against B after a "
               f"flush: at most {100 * best:.0f} % faster")
    print(f"    {reading}")
    return {"method": " ".join(cpu_locality.__doc__.split("\n\n")[1].split()), "precision": "fp32",
            "input": f"1x3x{input_size}x{input_size}", "threads": 1, "repeats": repeats, "last_level_cache_mb": 32,
            "rows": rows, "per_target": per_b, "slope_ms_per_shared_mb": fit.slope, "slope_stderr": fit.stderr,
            "r2": fit.rvalue ** 2, "p_value": fit.pvalue, "roofline_slope_ms_per_shared_mb": model_slope,
            "reading": reading}


def plot(result: dict[str, Any]) -> None:
    """Off-chip bytes and service time per policy (relative to no cache), the buffer sweep, and
    the CPU's B-after-A latencies against shared MB."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = result["architectures"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    width = 0.8 / len(POLICIES)
    for k, pname in enumerate(POLICIES):
        xs = np.arange(2 * len(archs)) + k * width
        ys = []
        for a in archs.values():
            base = a["policies"]["no_cache"]
            ys += [a["policies"][pname]["offchip_bytes_per_query"] / base["offchip_bytes_per_query"],
                   a["policies"][pname]["service_mean_ms"] / base["service_mean_ms"]]
        axes[0].bar(xs, ys, width, label=pname)
    axes[0].set_xticks(np.arange(2 * len(archs)) + 0.4 - width / 2,
                       [f"{n}\n{m}" for n in archs for m in ("off-chip bytes", "service time")], fontsize=7)
    axes[0].set_ylabel("relative to no_cache")
    axes[0].set_ylim(0, 1.3)
    axes[0].legend(fontsize=7, loc="upper center", ncol=4)
    for name, a in archs.items():
        fr = [r["buffer_fraction_of_largest"] for r in a["buffer_sweep"]]
        for pname, style in (("cache_aware", "-o"), ("lru_layers", "--s"), ("static_smallest", ":^")):
            axes[1].plot(fr, [r[pname]["offchip_bytes_per_query"] / r["no_cache"]["offchip_bytes_per_query"]
                              for r in a["buffer_sweep"]], style, label=f"{name} {pname}")
    axes[1].set_xscale("log", base=2)
    axes[1].set_xlabel("buffer / largest SubNet's weight bytes")
    axes[1].set_ylabel("off-chip bytes / no_cache (half-length time-varying)")
    axes[1].legend(fontsize=6)
    loc = next(iter(result["cpu_locality"].values())) if result.get("cpu_locality") else None
    if loc:
        for b in loc["per_target"]:
            r = [row for row in loc["rows"] if row["b"] == b]
            axes[2].plot([row["shared_mb"] for row in r], [row["t_b_after_a_ms"] for row in r], "o",
                         label=f"B = {loc['per_target'][b]['b_mb']:.1f} MB")
        axes[2].set_xlabel(f"weight MB shared with the SubNet run before (fp32, {loc['input']})")
        axes[2].set_ylabel("batch-1 latency of B (ms), this CPU")
        axes[2].set_title(f"slope {loc['slope_ms_per_shared_mb']:+.3f} +- {loc['slope_stderr']:.3f} ms/MB", fontsize=9)
        axes[2].legend(fontsize=7)
    else:
        axes[2].axis("off")
    fig.tight_layout()
    path = RESULTS / "subgraph.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller traces and fewer CPU pairs")
    ap.add_argument("--skip-cpu", action="store_true", help="only the modelled accelerator study")
    ap.add_argument("--cpu-only", action="store_true",
                    help="re-measure only the CPU parts, keeping the (deterministic) simulation of the last run")
    args = ap.parse_args()
    scale = 0.4 if args.quick else 1.0
    acc = ZCU104_INT8
    t0 = time.perf_counter()
    if args.cpu_only:
        result = json.loads((RESULTS / "subgraph.json").read_text())
    else:
        profile = LatencyProfile.load(EMBEDDED_DIR / "profile.json")
        catalogs = {"embedded_resnet": resnet_catalog(fashion_mnist_spec(), profile, element_bytes=acc.element_bytes),
                    "ofa_mbv3": mbv3_catalog(element_bytes=acc.element_bytes),
                    "ofa_proxyless": proxyless_catalog(element_bytes=acc.element_bytes)}
        result = {"accelerator": acc.to_dict(), "policy": PolicyConfig().__dict__,
                  "adaptive_subgraph": {"period": 16, "window": 256}, "sushi_published": SUSHI_PUBLISHED,
                  "architectures": {name: study(name, cat, acc, scale) for name, cat in catalogs.items()},
                  "simulation_wall_s": time.perf_counter() - t0}
    if not args.skip_cpu:
        print("\n== this CPU")
        t1 = time.perf_counter()
        ofa32 = mbv3_catalog(element_bytes=4)
        run, _ = _ofa_runner(ofa32)
        real = measure_ofa(ofa32, run, 3 if args.quick else 5, 3 if args.quick else 2)
        cpu = measure_cpu()
        result["cpu_cost_model_check"] = cost_model_check(cpu, real, ofa32)
        result["cpu_locality"] = {f"r{r}": cpu_locality(ofa32, r, cpu, 3 if args.quick else 7, args.quick)
                                  for r in LOCALITY_RESOLUTIONS}
        result["cpu_wall_s"] = time.perf_counter() - t1
    write_json("subgraph", result)
    plot(result)


if __name__ == "__main__":
    main()
