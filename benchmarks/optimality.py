"""Each policy's utility (sum of accuracy over requests served in time, the paper's objective)
as a fraction of an upper bound on the offline optimum, on small instances.

Instances: 150-request windows of bursty traces (CV^2 8) on 1 and 2 workers at two loads,
with a 4-SubNet subset of the profile spanning its accuracy range (keeps the program small;
every policy runs on the same subset). The bound is the LP relaxation of the time-indexed
program in superserve/sim/optimum.py, so the fractions are conservative (true optimum <= bound).
"""
from __future__ import annotations

from _common import capacity_qps, lineup, parser, print_table, setup, write_json, Timer

from superserve.sim import simulate
from superserve.sim.defaults import default_slo_ms, spanning_subnets
from superserve.sim.optimum import offline_optimum, utility
from superserve.workload import bursty

REQUESTS = 150


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--requests", type=int, default=REQUESTS)
    p.add_argument("--time-limit", type=float, default=120.0)
    args = p.parse_args()
    full, which, _ = setup(args)
    profile = full.subset(spanning_subnets(full, 4))
    slo = args.slo_ms if args.slo_ms is not None else default_slo_ms(profile)
    print(f"subset {[s.id for s in profile.subnets]}, SLO {slo} ms")
    instances, all_rows = [], []
    with Timer() as t:
        for workers in (1, 2):
            for load in (1.0, 1.5):  # x C_mid of the subset on these workers (mean rate)
                cmid = capacity_qps(profile, 1, workers)
                tr = bursty(0.3 * load * cmid, 0.7 * load * cmid, 8, 5.0, seed=int(10 * load) + workers)
                arr = tr.arrivals[:args.requests]
                opt = offline_optimum(arr, slo, profile, num_workers=workers, time_limit_s=args.time_limit)
                rows = []
                for name, pol in lineup(profile):
                    r = simulate(arr - arr[0], profile, pol, num_workers=workers, slo_ms=slo)
                    u = utility(r)
                    rows.append({"policy": name, "utility": u, "fraction_of_bound": u / opt.upper_bound,
                                 "slo_attainment": r.slo_attainment, "mean_accuracy": r.mean_accuracy})
                title = (f"{workers} worker(s), load {load} C_mid ({load * cmid:.0f}/s), {len(arr)} requests; "
                         f"bound {opt.upper_bound:.2f} ({opt.status[:40]}, {opt.solve_s:.1f} s, {opt.num_variables} vars)")
                print_table(title, rows, ["policy", "utility", "fraction_of_bound", "slo_attainment", "mean_accuracy"])
                instances.append({"workers": workers, "load_x_cmid": load, "requests": len(arr),
                                  "upper_bound": opt.upper_bound, "solver_status": opt.status,
                                  "solve_s": opt.solve_s, "slot_ms": opt.slot_ms, "variables": opt.num_variables,
                                  "rows": rows})
                all_rows += rows
    sf = [r["fraction_of_bound"] for r in all_rows if r["policy"] == "SlackFit"]
    summary = {"slackfit_min_fraction": min(sf), "slackfit_mean_fraction": sum(sf) / len(sf),
               "target": 0.9, "pass": min(sf) >= 0.9}
    print(f"\nSlackFit utility / optimum bound: {summary}   ({t.s:.1f} s)")
    write_json("optimality", {"profile": which, "subset": [s.id for s in profile.subnets], "slo_ms": slo,
                              "summary": summary, "instances": instances})
    _plot(instances)


def _plot(instances: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from _common import RESULTS
    fig, ax = plt.subplots(figsize=(8, 3.6))
    names = [r["policy"] for r in instances[0]["rows"]]
    width = 0.8 / len(instances)
    for k, inst in enumerate(instances):
        ax.bar([i + k * width for i in range(len(names))], [r["fraction_of_bound"] for r in inst["rows"]], width,
               label=f"{inst['workers']}w, {inst['load_x_cmid']} C_mid")
    ax.axhline(0.9, color="k", ls="--", lw=1)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("utility / optimum upper bound")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(RESULTS / "optimality.png", dpi=110)
    print(f"wrote {RESULTS / 'optimality.png'}")


if __name__ == "__main__":
    main()
