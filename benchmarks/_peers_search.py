"""The rate search of benchmarks/peers.py: the highest offered rate whose SLO attainment holds.

``run(rate)`` performs one open-loop run and returns a dict with at least ``attainment``.
Bracketing: from ``start``, double while runs pass (or halve while they fail) until a passing
rate and a failing rate bracket the answer; bisection then narrows the bracket to
``rel_tol``. The candidate counts only if ``repeats`` further runs at it also pass; if one
does not, the candidate becomes the failing bound and the search steps down (by the
tolerance) until a rate passes all its runs. No timing here: the logic is tested on a fake
runner (tests/test_peers_search.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass
class SearchResult:
    max_rate: float  # 0.0: not even min_rate held
    runs: list[dict]  # the runs at max_rate (first + repeats)
    trace: list[dict] = field(default_factory=list)  # every run, in order

    @property
    def p50_ms(self) -> float | None:
        return max((r["p50_ms"] for r in self.runs if "p50_ms" in r), default=None)

    @property
    def p99_ms(self) -> float | None:
        return max((r["p99_ms"] for r in self.runs if "p99_ms" in r), default=None)


def search_max_rate(run: Callable[[float], dict], *, start: float, target: float = 0.999, repeats: int = 2,
                    rel_tol: float = 0.05, min_rate: float = 1.0, max_rate: float = 100_000.0,
                    max_runs: int = 40) -> SearchResult:
    trace: list[dict] = []

    def once(rate: float) -> tuple[bool, dict]:
        s = dict(run(rate))
        s.setdefault("rate", rate)
        s["passed"] = s["attainment"] >= target
        trace.append(s)
        return s["passed"], s

    lo: tuple[float, dict] | None = None
    hi: float | None = None
    rate = min(max(start, min_rate), max_rate)
    # --- bracket ---------------------------------------------------------------------------
    while len(trace) < max_runs:
        ok, s = once(rate)
        if ok:
            lo = (rate, s)
            if hi is not None or rate >= max_rate:
                break
            rate = min(rate * 2.0, max_rate)
        else:
            hi = rate
            if lo is not None:
                break
            if rate <= min_rate:
                return SearchResult(0.0, [], trace)
            rate = max(rate / 2.0, min_rate)
    if lo is None:
        return SearchResult(0.0, [], trace)
    # --- bisect ----------------------------------------------------------------------------
    while hi is not None and hi / lo[0] > 1.0 + rel_tol and len(trace) < max_runs:
        mid = (lo[0] + hi) / 2.0
        ok, s = once(mid)
        if ok:
            lo = (mid, s)
        else:
            hi = mid
    # --- confirm: the candidate must hold in `repeats` more runs ----------------------------
    cand, first = lo
    while len(trace) < max_runs:
        runs = [first]
        for _ in range(repeats):
            ok, s = once(cand)
            runs.append(s)
            if not ok:
                break
        if all(r["passed"] for r in runs):
            return SearchResult(cand, runs, trace)
        # Not reproducible: step down until a rate passes its first run, then confirm that one.
        while len(trace) < max_runs:
            cand = cand / (1.0 + rel_tol)
            if cand < min_rate:
                return SearchResult(0.0, [], trace)
            ok, first = once(cand)
            if ok:
                break
    return SearchResult(0.0, [], trace)  # ran out of runs without a confirmed rate
