"""What a simulation run produces: per-request records, per-batch records and the metrics."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from superserve.outcome import SIM_OUTCOMES, Outcome

IN_TIME, LATE, SHED, REJECTED = SIM_OUTCOMES
OUTCOME_NAMES = tuple(o.label for o in SIM_OUTCOMES)


@dataclass
class SimResult:
    """Per-request arrays (index = request id) and per-batch arrays, plus run facts.

    ``outcome`` is IN_TIME (answered by the deadline), LATE (answered after it), SHED
    (answered "cannot make it" without running, at arrival or from the queue; also requests
    left when every worker died) or REJECTED (the queue was at its bound).
    """

    arrival: np.ndarray
    deadline: np.ndarray
    finish: np.ndarray  # answer time (shed: when it was shed); nan if never answered
    subnet: np.ndarray  # SubNet index that served it, -1 when shed
    batch_size: np.ndarray  # size of the batch it ran in, 0 when shed
    outcome: np.ndarray  # int8 Outcome codes: IN_TIME / LATE / SHED / REJECTED
    batch_start: np.ndarray
    batch_subnet: np.ndarray
    batch_size_log: np.ndarray
    batch_queue_len: np.ndarray  # queue length when the batch was decided (before popping)
    batch_worker: np.ndarray
    subnet_accuracy: np.ndarray  # accuracy per SubNet index
    subnet_ids: tuple[str, ...]
    wall_s: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)

    # --- headline metrics ----------------------------------------------------------------
    @property
    def num_requests(self) -> int:
        return int(self.arrival.size)

    @property
    def duration_s(self) -> float:
        return float(self.arrival[-1] - self.arrival[0]) if self.arrival.size > 1 else 0.0

    def count(self, outcome: Outcome | int) -> int:
        return int(np.count_nonzero(self.outcome == outcome))

    @property
    def slo_attainment(self) -> float:
        """Fraction of all requests answered by their deadline (shed and late are misses)."""
        return self.count(IN_TIME) / self.num_requests if self.num_requests else 1.0

    @property
    def mean_accuracy(self) -> float:
        """Mean profiled accuracy of the SubNets that served requests in time."""
        ok = self.outcome == IN_TIME
        return float(self.subnet_accuracy[self.subnet[ok]].mean()) if ok.any() else float("nan")

    @property
    def goodput_rps(self) -> float:
        return self.count(IN_TIME) / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def throughput_rps(self) -> float:
        """Requests run to completion (in time or late) per second of trace."""
        served = self.count(IN_TIME) + self.count(LATE)
        return served / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def sim_requests_per_s(self) -> float:
        return self.num_requests / self.wall_s if self.wall_s > 0 else float("inf")

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.num_requests,
            "slo_attainment": self.slo_attainment,
            "mean_accuracy": self.mean_accuracy,
            "in_time": self.count(IN_TIME), "late": self.count(LATE), "shed": self.count(SHED),
            "rejected": self.count(REJECTED),
            "goodput_rps": round(self.goodput_rps, 2), "throughput_rps": round(self.throughput_rps, 2),
            "mean_batch_size": float(self.batch_size_log.mean()) if self.batch_size_log.size else 0.0,
            "batches": int(self.batch_size_log.size),
            "wall_s": round(self.wall_s, 4), "sim_requests_per_s": round(self.sim_requests_per_s),
            **{k: v for k, v in self.params.items() if isinstance(v, (int, float, str, bool)) or v is None},
        }

    def time_series(self, bin_s: float = 1.0) -> dict[str, list[float]]:
        """Per time bin: arrival rate, goodput, SLO attainment of arrivals, chosen accuracy
        and batch size (means over decided batches, weighted by size), queue length."""
        t0 = float(self.arrival[0]) if self.arrival.size else 0.0
        end = max(float(self.arrival[-1]) if self.arrival.size else 0.0,
                  float(self.batch_start[-1]) if self.batch_start.size else 0.0) - t0
        nbins = max(1, int(np.ceil(end / bin_s + 1e-12)))
        edges = t0 + np.arange(nbins + 1) * bin_s

        def per_bin(times: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
            return np.histogram(times, bins=edges, weights=weights)[0].astype(float)

        arrivals = per_bin(self.arrival)
        ok = self.outcome == IN_TIME
        in_time_by_arrival = per_bin(self.arrival[ok])
        good = per_bin(self.finish[ok])
        sizes = per_bin(self.batch_start, self.batch_size_log.astype(float))
        nbatch = per_bin(self.batch_start)
        acc_w = per_bin(self.batch_start, self.subnet_accuracy[self.batch_subnet] * self.batch_size_log)
        qlen = per_bin(self.batch_start, self.batch_queue_len.astype(float))
        with np.errstate(divide="ignore", invalid="ignore"):
            return {
                "t": (edges[:-1] - t0).tolist(),
                "rate": (arrivals / bin_s).tolist(),
                "goodput": (good / bin_s).tolist(),
                "slo_attainment": np.where(arrivals > 0, in_time_by_arrival / arrivals, np.nan).tolist(),
                "accuracy": np.where(sizes > 0, acc_w / sizes, np.nan).tolist(),
                "batch_size": np.where(nbatch > 0, sizes / nbatch, np.nan).tolist(),
                "queue_len": np.where(nbatch > 0, qlen / nbatch, np.nan).tolist(),
            }

    def records(self) -> list[dict[str, Any]]:
        """Per-request records as dicts (for files; use the arrays for analysis)."""
        return [{"id": i, "arrival": float(self.arrival[i]), "deadline": float(self.deadline[i]),
                 "finish": float(self.finish[i]),
                 "subnet": self.subnet_ids[self.subnet[i]] if self.subnet[i] >= 0 else None,
                 "batch": int(self.batch_size[i]), "outcome": Outcome(int(self.outcome[i])).label}
                for i in range(self.num_requests)]

    def save_records(self, path: str) -> None:
        """Per-request records as a .npz of arrays (compact; millions of rows are fine)."""
        np.savez_compressed(path, arrival=self.arrival, deadline=self.deadline, finish=self.finish,
                            subnet=self.subnet, batch_size=self.batch_size, outcome=self.outcome,
                            subnet_ids=np.array(self.subnet_ids))
