"""Time-varying traces (paper section 6): 3 x 3 grid of target rate x acceleration tau, CV^2 = 8.

The rate starts at lambda_1 = 0.5 C_mid, holds 2 s, ramps at tau to lambda_2 in
{0.9, 1.2, 1.4} C_mid and holds 4 s. The paper ramps 2500 -> {4800, 6800, 7800} qps at tau in
{250, 500, 5000} q/s^2; we state tau relative to C_mid per second: {0.05, 0.2, 2.0} C_mid/s,
so the slowest ramp takes about 8-18 s and the fastest well under a second.

The asked CV^2 holds for the gaps at a steady rate; the ramp adds to the whole trace's CV^2
as measured. Both are printed and stored, with the measured peak/mean rate at 100 ms and 1 s.
"""
from __future__ import annotations

from benchmarks._common import (Timer, accuracy_span_pts, capacity_qps, headline, mid_index, parser, plot_grid,
                               print_table, run_lineup, setup, slackfit_kw, summarize_headlines, write_json)

from superserve.workload import time_varying

START_FRACTION = 0.5
TARGET_FRACTIONS = (0.9, 1.2, 1.4)
TAU_FRACTIONS = (0.05, 0.2, 2.0)  # C_mid per second
CV2 = 8.0


def main() -> None:
    args = parser(__doc__).parse_args()
    profile, which, slo = setup(args)
    cmid = capacity_qps(profile, mid_index(profile), args.workers)
    print(f"C_mid = {cmid:.0f} req/s; start {START_FRACTION} C_mid; CV^2 {CV2}")
    traces, panels, heads = [], [], []
    with Timer() as t:
        for target in TARGET_FRACTIONS:
            for tauf in TAU_FRACTIONS:
                tr = time_varying(START_FRACTION * cmid, target * cmid, tauf * cmid, CV2, hold_start_s=2.0,
                                  hold_end_s=4.0, seed=int(10 * target + 100 * tauf))
                rows = run_lineup(tr, profile, slo, args.workers, slackfit_kw(args))
                h = headline(rows)
                title = f"lambda_2={target} C_mid, tau={tauf} C_mid/s ({tauf * cmid:.0f} q/s^2)"
                s = tr.summary()
                print_table(title + f"  [{len(tr)} requests, {tr.duration_s:.1f} s; CV^2 asked {CV2:g}, measured "
                            f"{s['cv2_measured']}; peak/mean {s['peak_to_mean_100ms']} (100 ms), "
                            f"{s['peak_to_mean_1s']} (1 s)]", rows,
                            ["policy", "slo_attainment", "mean_accuracy", "mean_batch_size", "shed"])
                print(f"  headline: {h}")
                traces.append({"target_fraction": target, "tau_fraction": tauf, "tau_qps2": tauf * cmid,
                               "cv2_asked": CV2, "cv2_measured": s["cv2_measured"],
                               "peak_to_mean_100ms": s["peak_to_mean_100ms"], "peak_to_mean_1s": s["peak_to_mean_1s"],
                               "trace": s, "meta": tr.meta, "rows": rows, "headline": h})
                panels.append((title, rows))
                heads.append(h)
    summary = summarize_headlines(heads)
    summary["accuracy_span_pts"] = accuracy_span_pts(profile)
    print(f"\nheadline over the grid: {summary}   ({t.s:.1f} s)")
    plot_grid("timevarying", panels, suptitle=f"Time-varying traces, CV^2=8, SLO {slo} ms, {args.workers} workers ({which})")
    write_json("timevarying", {"profile": which, "slo_ms": slo, "workers": args.workers, "c_mid_qps": cmid,
                               "summary": summary, "traces": traces})


if __name__ == "__main__":
    main()
