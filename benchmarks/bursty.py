"""Bursty traces (paper section 6, Fig. 8 style): 3 x 3 grid of variant rate x CV^2.

Each trace = a constant-rate base stream + a Gamma stream (rate lambda_v, CV^2). Rates are
stated relative to C_mid, the peak throughput of the mid-accuracy SubNet (largest batch) on
all workers: base = 0.3 C_mid and lambda_v in {0.4, 0.7, 1.0} C_mid, so the mean load spans
0.7, 1.0 and 1.3 C_mid: from comfortable to beyond the mid SubNet's capacity (the paper's
lambda_v in {2950, 4900, 5550} on a 2,000-8,000 qps cluster plays the same role).

The asked CV^2 is the Gamma stream's; the constant base stream fills its gaps, so each trace's
whole-stream CV^2 as measured is lower. Both are printed and stored, with the measured
peak/mean rate at 100 ms and 1 s bins.
"""
from __future__ import annotations

from benchmarks._common import (Timer, accuracy_span_pts, capacity_qps, headline, mid_index, parser, plot_grid,
                               print_table, run_lineup, setup, slackfit_kw, summarize_headlines, write_json)

from superserve.workload import bursty

VARIANT_FRACTIONS = (0.4, 0.7, 1.0)
BASE_FRACTION = 0.3
CV2S = (2, 4, 8)


def main() -> None:
    args = parser(__doc__).parse_args()
    profile, which, slo = setup(args)
    duration = args.duration or 15.0
    cmid = capacity_qps(profile, mid_index(profile), args.workers)
    print(f"C_mid = {cmid:.0f} req/s ({profile.subnets[mid_index(profile)].id} at batch {profile.max_batch} "
          f"on {args.workers} workers); base stream {BASE_FRACTION} C_mid; {duration} s per trace")
    traces, panels, heads = [], [], []
    with Timer() as t:
        for vf in VARIANT_FRACTIONS:
            for cv2 in CV2S:
                tr = bursty(BASE_FRACTION * cmid, vf * cmid, cv2, duration, seed=int(100 * vf) + cv2)
                rows = run_lineup(tr, profile, slo, args.workers, slackfit_kw(args))
                h = headline(rows)
                title = f"lambda_v={vf:.1f} C_mid ({vf * cmid:.0f}/s), CV^2={cv2}"
                s = tr.summary()
                print_table(title + f"  [{s['requests']} requests; CV^2 asked {cv2} (Gamma stream), measured "
                            f"{s['cv2_measured']} (whole stream); peak/mean {s['peak_to_mean_100ms']} (100 ms), "
                            f"{s['peak_to_mean_1s']} (1 s)]", rows,
                            ["policy", "slo_attainment", "mean_accuracy", "mean_batch_size", "shed"])
                print(f"  headline: {h}")
                traces.append({"variant_fraction": vf, "cv2": cv2, "cv2_asked": cv2, "cv2_measured": s["cv2_measured"],
                               "peak_to_mean_100ms": s["peak_to_mean_100ms"], "peak_to_mean_1s": s["peak_to_mean_1s"],
                               "trace": s, "meta": tr.meta, "rows": rows, "headline": h})
                panels.append((title, rows))
                heads.append(h)
    summary = summarize_headlines(heads)
    summary["accuracy_span_pts"] = accuracy_span_pts(profile)
    print(f"\nheadline over the grid: {summary}   ({t.s:.1f} s)")
    plot_grid("bursty", panels, suptitle=f"Bursty traces, SLO {slo} ms, {args.workers} workers ({which})")
    write_json("bursty", {"profile": which, "slo_ms": slo, "workers": args.workers, "duration_s": duration,
                          "c_mid_qps": cmid, "base_fraction": BASE_FRACTION, "summary": summary, "traces": traces})


if __name__ == "__main__":
    main()
