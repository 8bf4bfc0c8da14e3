"""Synthetic arrival processes (all seeded; same arguments, same trace).

Gamma renewal processes model burstiness: gaps ~ Gamma(shape 1/CV^2, mean 1/rate), so CV^2 = 1
is Poisson and larger CV^2 packs arrivals into bursts. Time-varying rates use the same
renewal process in "operational time": unit-rate Gamma arrivals u_k are mapped through the
inverse of the cumulative rate, t_k = Lambda^-1(u_k), which keeps the local CV^2 while the
rate follows the requested curve.
"""
from __future__ import annotations

import numpy as np

from superserve.workload.trace import Trace


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _renewal(rate: float, cv2: float, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Gamma renewal arrivals in [0, duration_s); cv2 = 0 gives a constant rate."""
    if rate <= 0 or duration_s <= 0:
        return np.empty(0)
    expected = rate * duration_s
    n = int(expected + 6 * np.sqrt(expected * max(cv2, 1.0)) + 16)
    if cv2 <= 0:
        start = rng.uniform(0.0, 1.0 / rate)  # random phase so two constant streams do not align
        t = start + np.arange(n) / rate
    else:
        shape = 1.0 / cv2
        # Start in equilibrium: a stationary renewal process's first gap follows the
        # length-biased residual; approximated by drawing a gap and a uniform fraction of it.
        gaps = rng.gamma(shape, 1.0 / (rate * shape), size=n)
        gaps[0] *= rng.uniform()
        t = np.cumsum(gaps)
        while t[-1] < duration_s:  # rare: top up
            more = np.cumsum(rng.gamma(shape, 1.0 / (rate * shape), size=n)) + t[-1]
            t = np.concatenate([t, more])
    return t[t < duration_s]


def poisson(rate: float, duration_s: float, seed: int | None = 0) -> Trace:
    """Poisson arrivals at ``rate`` per second."""
    a = _renewal(rate, 1.0, duration_s, _rng(seed))
    return Trace(a, f"poisson-{rate:g}", {"kind": "poisson", "rate": rate, "duration_s": duration_s, "seed": seed})


def gamma(rate: float, cv2: float, duration_s: float, seed: int | None = 0) -> Trace:
    """Gamma renewal arrivals with mean ``rate`` and inter-arrival CV^2 ``cv2``."""
    a = _renewal(rate, cv2, duration_s, _rng(seed))
    return Trace(a, f"gamma-{rate:g}-cv{cv2:g}",
                 {"kind": "gamma", "rate": rate, "cv2": cv2, "duration_s": duration_s, "seed": seed})


def bursty(base_rate: float, variant_rate: float, cv2: float, duration_s: float,
           seed: int | None = 0, base_cv2: float = 0.0) -> Trace:
    """The paper's bursty trace: a constant-rate base stream (``base_cv2`` = 0) plus a Gamma
    stream of rate ``variant_rate`` and CV^2 ``cv2``. Mean rate = base_rate + variant_rate."""
    rng = _rng(seed)
    a = np.sort(np.concatenate([_renewal(base_rate, base_cv2, duration_s, rng),
                                _renewal(variant_rate, cv2, duration_s, rng)]))
    return Trace(a, f"bursty-{base_rate:g}+{variant_rate:g}-cv{cv2:g}",
                 {"kind": "bursty", "base_rate": base_rate, "base_cv2": base_cv2, "variant_rate": variant_rate,
                  "cv2": cv2, "duration_s": duration_s, "seed": seed})


def modulated_gamma(times_s: np.ndarray, rates: np.ndarray, cv2: float, seed: int | None = 0,
                    name: str = "modulated") -> Trace:
    """Gamma arrivals (CV^2 ``cv2``) whose rate follows the piecewise-linear curve through
    (times_s[i], rates[i]), from times_s[0] to times_s[-1]."""
    times_s = np.asarray(times_s, dtype=np.float64)
    rates = np.asarray(rates, dtype=np.float64)
    if np.any(rates < 0) or np.any(np.diff(times_s) <= 0):
        raise ValueError("rates must be >= 0 and times strictly increasing")
    # Cumulative rate by the trapezoid rule; exact for a piecewise-linear rate.
    cum = np.concatenate([[0.0], np.cumsum(np.diff(times_s) * (rates[1:] + rates[:-1]) / 2)])
    rng = _rng(seed)
    u = _renewal(1.0, cv2, float(cum[-1]), rng)
    # Invert Lambda segment by segment (quadratic inside a segment with a sloped rate).
    seg = np.clip(np.searchsorted(cum, u, side="right") - 1, 0, len(times_s) - 2)
    r0, r1 = rates[seg], rates[seg + 1]
    dt = times_s[seg + 1] - times_s[seg]
    slope = (r1 - r0) / dt
    need = u - cum[seg]
    with np.errstate(divide="ignore", invalid="ignore"):
        quad = (-r0 + np.sqrt(np.maximum(r0 * r0 + 2 * slope * need, 0.0))) / slope
        lin = need / r0
    offset = np.where(np.abs(slope) > 1e-12, quad, lin)
    t = times_s[seg] + np.nan_to_num(offset, nan=0.0, posinf=0.0)
    return Trace(np.sort(t - times_s[0]), name, {"kind": "modulated_gamma", "cv2": cv2, "seed": seed})


def time_varying(rate_start: float, rate_end: float, tau: float, cv2: float = 8.0, *,
                 hold_start_s: float = 2.0, hold_end_s: float = 5.0, seed: int | None = 0) -> Trace:
    """The paper's time-varying trace: ``rate_start`` for ``hold_start_s``, then a linear ramp
    at acceleration ``tau`` (requests/s^2) to ``rate_end``, held for ``hold_end_s``; Gamma
    arrivals with CV^2 ``cv2`` throughout."""
    if tau <= 0:
        raise ValueError("tau (acceleration, q/s^2) must be > 0")
    ramp_s = abs(rate_end - rate_start) / tau
    knots = np.array([0.0, hold_start_s, hold_start_s + ramp_s, hold_start_s + ramp_s + hold_end_s])
    knots = np.maximum.accumulate(knots + np.arange(4) * 1e-9)
    tr = modulated_gamma(knots, np.array([rate_start, rate_start, rate_end, rate_end]), cv2, seed,
                         f"timevarying-{rate_start:g}-{rate_end:g}-tau{tau:g}-cv{cv2:g}")
    tr.meta.update({"kind": "time_varying", "rate_start": rate_start, "rate_end": rate_end, "tau": tau,
                    "hold_start_s": hold_start_s, "ramp_s": ramp_s, "hold_end_s": hold_end_s})
    return tr
