"""Real traces: the Azure LLM inference trace 2023 (conversation; Patel et al., Splitwise,
ISCA 2024) and the Azure Functions 2019 format (Shahrad et al., Serverless in the Wild,
USENIX ATC 2020; the bundled file is a four-function format sample, so its shape is flat;
point --functions at a full invocations_per_function_md.anon.dNN.csv for the real day).

Each trace is replayed at two loads relative to the worker pool: mean = C_mid (the
mid-accuracy SubNet's peak throughput) and mean = 0.8 C_small (the paper replays Azure
Functions at 6,400 qps on a cluster whose smallest SubNet peaks near 8,000 qps). The LLM
trace is replayed by time compression (every gap scaled by one factor, so its bursts stay
bursts); both traces ship with the package (superserve/data/traces, CC-BY 4.0). Each trace's
compression factor, measured inter-arrival CV^2 and peak/mean rate at 100 ms and 1 s bins are
printed and stored with its results.
"""
from __future__ import annotations

from pathlib import Path

from benchmarks._common import (Timer, accuracy_span_pts, capacity_qps, headline, mid_index, parser, plot_grid,
                               print_table, run_lineup, setup, slackfit_kw, summarize_headlines, write_json)

from superserve.workload import azure_functions, bundled_trace_path, timestamped

LLM = bundled_trace_path("azure_llm_2023_conv")
FUNCTIONS = bundled_trace_path("azure_functions_2019_sample")


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--llm", type=Path, default=LLM)
    p.add_argument("--functions", type=Path, default=FUNCTIONS)
    p.add_argument("--llm-window", type=float, nargs=2, default=None, metavar=("START_S", "END_S"),
                   help="replay only this slice of the LLM trace (seconds of the original hour)")
    args = p.parse_args()
    profile, which, slo = setup(args)
    cmid = capacity_qps(profile, mid_index(profile), args.workers)
    csmall = capacity_qps(profile, 0, args.workers)
    duration = args.duration or 20.0
    loads = {"C_mid": cmid, "0.8 C_small": 0.8 * csmall}
    traces, panels, heads = [], [], []
    with Timer() as t:
        for load_name, rate in loads.items():
            for tr in (timestamped(args.llm, mean_rate=rate, window_s=args.llm_window),
                       azure_functions(args.functions, duration, rate, trim_idle=True, seed=1)):
                rows = run_lineup(tr, profile, slo, args.workers, slackfit_kw(args))
                h = headline(rows)
                title = f"{tr.name} @ {load_name} ({rate:.0f}/s)"
                s = tr.summary()
                print_table(title + f"  [{s['requests']} requests, {s['duration_s']:.2f} s, compressed "
                            f"{s['compression']:.0f}x; measured CV^2 {s['cv2_measured']}, peak/mean "
                            f"{s['peak_to_mean_100ms']} (100 ms) {s['peak_to_mean_1s']} (1 s)]", rows,
                            ["policy", "slo_attainment", "mean_accuracy", "mean_batch_size", "shed"])
                print(f"  headline: {h}")
                traces.append({"load": load_name, "rate": rate, "trace": s, "meta": tr.meta,
                               "rows": rows, "headline": h})
                panels.append((title, rows))
                heads.append(h)
    summary = summarize_headlines(heads)
    summary["accuracy_span_pts"] = accuracy_span_pts(profile)
    print(f"\nheadline: {summary}   ({t.s:.1f} s)")
    plot_grid("realtrace", panels, ncols=2, suptitle=f"Real traces, SLO {slo} ms, {args.workers} workers ({which})")
    write_json("realtrace", {"profile": which, "slo_ms": slo, "workers": args.workers, "summary": summary,
                             "traces": traces, "cite": ["Patel et al., Splitwise, ISCA 2024",
                                                        "Shahrad et al., Serverless in the Wild, USENIX ATC 2020"]})


if __name__ == "__main__":
    main()
