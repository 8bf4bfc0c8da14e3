"""Worker failures (the paper kills one of 8 workers every 12 s): we kill one worker every 3 s
from t = 3 s until 4 of 8 remain, under a bursty trace (CV^2 4) whose mean is C_mid of 4
workers, i.e. comfortable for 8 workers and at the mid SubNet's limit for the last 4.
In-flight batches of a killed worker go back to the queue. Time compressed 4x vs the paper.
"""
from __future__ import annotations

from benchmarks._common import (RESULTS, Timer, capacity_qps, mid_index, parser, print_table, setup, slackfit_kw,
                               write_json)

from superserve.scheduling import ClipperPlus, INFaaS, MaxBatch, SlackFit
from superserve.sim import simulate
from superserve.workload import bursty


def main() -> None:
    args = parser(__doc__).parse_args()
    profile, which, slo = setup(args)
    W = args.workers
    kills = [(3.0 * (k + 1), W - 1 - k) for k in range(W // 2)]
    duration = args.duration or 3.0 * (len(kills) + 2)
    rate = capacity_qps(profile, mid_index(profile), W // 2)
    tr = bursty(0.3 * rate, 0.7 * rate, 4, duration, seed=7)
    mid = profile.subnets[mid_index(profile)].id
    pols = [("SlackFit", SlackFit(profile, num_workers=W, **slackfit_kw(args))), ("MaxBatch", MaxBatch(profile)), ("INFaaS", INFaaS(profile)),
            (f"Clipper+({mid})", ClipperPlus(profile, mid)),
            (f"Clipper+({profile.largest.id})", ClipperPlus(profile, profile.largest.id))]
    rows, series = [], {}
    with Timer() as t:
        for name, pol in pols:
            r = simulate(tr, profile, pol, num_workers=W, slo_ms=slo, failures=kills)
            ts = r.time_series(1.0)
            series[name] = ts
            rows.append({"policy": name, "slo_attainment": r.slo_attainment, "mean_accuracy": r.mean_accuracy,
                         "min_1s_attainment": min(v for v in ts["slo_attainment"] if v == v),
                         "shed": r.count(2), "late": r.count(1)})
    print(f"trace {tr.summary()}, kills {kills}")
    print_table("failures", rows, ["policy", "slo_attainment", "mean_accuracy", "min_1s_attainment", "shed"])
    print(f"({t.s:.1f} s)")
    write_json("sim_faults", {"profile": which, "slo_ms": slo, "workers": W, "kills": kills, "rate": rate,
                              "trace": tr.summary(), "rows": rows, "time_series": series})
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a1, a2, a3) = plt.subplots(3, 1, figsize=(7, 7), sharex=True)
    for name, ts in series.items():
        a1.plot(ts["t"], ts["slo_attainment"], label=name)
        a2.plot(ts["t"], [100 * v for v in ts["accuracy"]], label=name)
    a3.plot(series["SlackFit"]["t"], series["SlackFit"]["rate"], color="k")
    for tk, _ in kills:
        for ax in (a1, a2, a3):
            ax.axvline(tk, color="tab:red", ls=":", lw=1)
    a1.set_ylabel("SLO attainment (1 s bins)")
    a2.set_ylabel("serving accuracy (%)")
    a3.set_ylabel("arrival rate (req/s)")
    a3.set_xlabel("time (s); dotted: a worker is killed")
    a1.legend(fontsize=7)
    fig.suptitle(f"Worker failures: {W} workers, one killed every 3 s, SLO {slo} ms ({which})", fontsize=9)
    fig.tight_layout()
    fig.savefig(RESULTS / "sim_faults.png", dpi=110)
    print(f"wrote {RESULTS / 'sim_faults.png'}")


if __name__ == "__main__":
    main()
