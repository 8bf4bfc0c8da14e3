"""Policy comparison (the paper's Fig. 11c) and SlackFit's parameters.

Part A: SlackFit vs SlackFit-paper vs MaxBatch vs MaxAcc on bursty traces of increasing CV^2
(base 0.3 C_mid plus a Gamma stream of 0.7 C_mid).
Part B: ablations on a heavy bursty trace (base 0.2 + Gamma 0.7 C_small, CV^2 8, where C_small
is the fastest SubNet's peak throughput): the default SlackFit against the paper's rule and
MaxBatch (also on an overloaded trace, 0.3 + 0.9 C_small), SlackFit's rate weight, rate window
and demand margin; the paper's rule's number of buckets and partial-batch rule; shed rule,
lookahead reserve, planning quantile under noisy latencies, a known per-batch overhead, and the
late fallback when serving late vs shedding.
"""
from __future__ import annotations

from benchmarks._common import (Timer, capacity_qps, mid_index, parser, plot_grid, print_table, setup, slackfit_kw,
                               write_json)

from superserve.scheduling import MaxAcc, MaxBatch, SlackFit, SlackFitPaper
from superserve.sim import simulate
from superserve.workload import bursty

CV2S = (1, 2, 4, 8, 16)


def row(name: str, r) -> dict:
    return {"policy": name, "slo_attainment": r.slo_attainment, "mean_accuracy": r.mean_accuracy,
            "mean_batch_size": float(r.batch_size_log.mean()), "late": r.count(1), "shed": r.count(2)}


def main() -> None:
    args = parser(__doc__).parse_args()
    profile, which, slo = setup(args)
    W = args.workers
    cmid = capacity_qps(profile, mid_index(profile), W)
    duration = args.duration or 10.0
    out: dict = {"profile": which, "slo_ms": slo, "workers": W, "c_mid_qps": cmid}
    with Timer() as t:
        panels, part_a = [], []
        for cv2 in CV2S:
            tr = bursty(0.3 * cmid, 0.7 * cmid, cv2, duration, seed=cv2)
            rows = [row(n, simulate(tr, profile, p, num_workers=W, slo_ms=slo))
                    for n, p in (("SlackFit", SlackFit(profile, num_workers=W, **slackfit_kw(args))),
                                 ("SlackFit-paper", SlackFitPaper(profile)), ("MaxBatch", MaxBatch(profile)),
                                 ("MaxAcc", MaxAcc(profile)))]
            print_table(f"A. CV^2 = {cv2}", rows, ["policy", "slo_attainment", "mean_accuracy", "mean_batch_size", "shed"])
            part_a.append({"cv2": cv2, "rows": rows})
            panels.append((f"CV^2={cv2}", rows))
        out["part_a"] = part_a
        plot_grid("policies", panels, ncols=5, suptitle=f"SlackFit vs MaxBatch vs MaxAcc, bursty (0.3+0.7 C_mid), SLO {slo} ms ({which})")

        csmall = capacity_qps(profile, 0, W)
        heavy = bursty(0.2 * csmall, 0.7 * csmall, 8, duration, seed=42)
        overload = bursty(0.3 * csmall, 0.9 * csmall, 8, duration, seed=43)
        print(f"\nB. ablations on {heavy.summary()}; overload: {overload.summary()}")
        abl: dict[str, list[dict]] = {}

        def run(group: str, name: str, policy, trace=heavy, **kw) -> None:
            r = simulate(trace, profile, policy, num_workers=W, slo_ms=slo, **kw)
            abl.setdefault(group, []).append(row(name, r))

        def sf(**kw):  # the default SlackFit, told how many workers share the queue
            return SlackFit(profile, num_workers=W, **kw)

        run("default vs the paper's rule", "SlackFit", sf())
        run("default vs the paper's rule", "SlackFit-paper", SlackFitPaper(profile))
        run("default vs the paper's rule", "MaxBatch", MaxBatch(profile))
        run("default vs the paper's rule", "SlackFit / overload", sf(), overload)
        run("default vs the paper's rule", "SlackFit-paper / overload", SlackFitPaper(profile), overload)
        run("default vs the paper's rule", "MaxBatch / overload", MaxBatch(profile), overload)
        for rw in (0.0, 0.5, 0.85, 1.0, 1.5):
            run("SlackFit: rate weight in the cap", f"rate_weight={rw}", sf(rate_weight=rw))
        for win in (5.0, 10.0, 20.0, 40.0, 80.0):
            run("SlackFit: rate window", f"{win:g} ms", sf(rate_window_ms=win))
        for m in (0.0, 0.1, 0.25):
            run("SlackFit: margin on demand", f"margin={m}", sf(margin=m))
        for nb in (1, 2, 4, 8, 16, 32, 64, None):
            run("paper's rule: num_buckets (p50 latencies)", f"buckets={nb}", SlackFitPaper(profile, nb))
            run("paper's rule: num_buckets (lognormal latencies, p99 planning)", f"buckets={nb}",
                SlackFitPaper(profile, nb, quantile="p99"), latency="lognormal", seed=1)
        for rule in ("backlog", "hopeless"):
            for tname, tr in (("heavy", heavy), ("overload", overload)):
                run("shed rule", f"{rule} / {tname}", sf(shed_rule=rule), tr)
                run("shed rule", f"{rule} / {tname} / MaxBatch", MaxBatch(profile, shed_rule=rule), tr)
        for partial in ("upgrade", "paper"):
            run("paper's rule: partial batches", partial, SlackFitPaper(profile, partial=partial))
        for la in (False, True):
            for tname, tr in (("heavy", heavy), ("overload", overload)):
                run("lookahead reserve", f"{'on' if la else 'off'} / {tname}", sf(lookahead=la), tr)
                run("lookahead reserve", f"paper's rule {'on' if la else 'off'} / {tname}",
                    SlackFitPaper(profile, lookahead=la), tr)
        run("lookahead reserve", "MaxBatch / heavy", MaxBatch(profile), heavy)
        for wl in ("fastest", "drain"):
            run("overload: late fallback (late=serve)", wl, sf(when_late=wl), overload, late="serve")
        run("overload: late fallback (late=serve)", "shed instead", sf(), overload)
        for q in ("p50", "p99"):
            for lat in ("p50", "lognormal", "uniform"):
                run("planning quantile x latency model", f"plan {q} / latency {lat}", sf(quantile=q),
                    latency=lat, seed=1)
        for aware in (False, True):
            oh = 0.5
            run("per-batch overhead 0.5 ms", "policy told" if aware else "policy not told",
                sf(overhead_ms=oh if aware else 0.0), overhead_ms=oh)
        for group, rows in abl.items():
            print_table(group, rows, ["policy", "slo_attainment", "mean_accuracy", "mean_batch_size", "late", "shed"])
        out["part_b_trace"] = heavy.summary()
        out["part_b_overload_trace"] = overload.summary()
        out["part_b"] = abl
    print(f"\n({t.s:.1f} s)")
    write_json("policies", out)


if __name__ == "__main__":
    main()
