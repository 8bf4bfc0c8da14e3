"""Synthetic arrival processes (all seeded; same arguments, same trace).

Gamma renewal processes model burstiness: gaps ~ Gamma(shape 1/CV^2, mean 1/rate), so CV^2 = 1
is Poisson and larger CV^2 packs arrivals into bursts. Time-varying rates use the same
renewal process in "operational time": unit-rate Gamma arrivals u_k are mapped through the
inverse of the cumulative rate, t_k = Lambda^-1(u_k), which keeps the local CV^2 while the
rate follows the requested curve.

Gamma renewal streams reach a CV^2 of a few at realistic burst lengths; heavier bursts (CV^2
in the tens to hundreds, as production traces show at sub-second scale) come from an on/off
Markov-modulated Poisson process, :func:`onoff`.

Every generator records what was asked (``cv2_asked`` and its own parameters) and what the
arrivals show (``cv2_measured``, ``peak_to_mean_100ms``, ``peak_to_mean_1s``) in ``meta``.
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
    return Trace(a, f"poisson-{rate:g}", {"kind": "poisson", "rate": rate, "duration_s": duration_s, "seed": seed,
                                          "cv2_asked": 1.0}).record_measured()


def gamma(rate: float, cv2: float, duration_s: float, seed: int | None = 0) -> Trace:
    """Gamma renewal arrivals with mean ``rate`` and inter-arrival CV^2 ``cv2``."""
    a = _renewal(rate, cv2, duration_s, _rng(seed))
    return Trace(a, f"gamma-{rate:g}-cv{cv2:g}",
                 {"kind": "gamma", "rate": rate, "cv2": cv2, "duration_s": duration_s, "seed": seed,
                  "cv2_asked": cv2}).record_measured()


def bursty(base_rate: float, variant_rate: float, cv2: float, duration_s: float,
           seed: int | None = 0, base_cv2: float = 0.0) -> Trace:
    """The paper's bursty trace: a constant-rate base stream (``base_cv2`` = 0) plus a Gamma
    stream of rate ``variant_rate`` and CV^2 ``cv2``. Mean rate = base_rate + variant_rate.

    ``cv2`` is the Gamma stream's. Merging it with the base stream fills the long gaps, so the
    whole stream's measured CV^2 (``meta["cv2_measured"]``) is much lower and can come out
    close to 1 (Poisson-like gaps); burstiness then shows mainly in ``peak_to_mean_100ms``.
    Use :func:`onoff` for a stream whose own CV^2 is high."""
    rng = _rng(seed)
    a = np.sort(np.concatenate([_renewal(base_rate, base_cv2, duration_s, rng),
                                _renewal(variant_rate, cv2, duration_s, rng)]))
    return Trace(a, f"bursty-{base_rate:g}+{variant_rate:g}-cv{cv2:g}",
                 {"kind": "bursty", "base_rate": base_rate, "base_cv2": base_cv2, "variant_rate": variant_rate,
                  "cv2": cv2, "duration_s": duration_s, "seed": seed,
                  "cv2_asked": cv2, "cv2_asked_applies_to": "the Gamma (variant) stream only"}).record_measured()


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
    return Trace(np.sort(t - times_s[0]), name, {
        "kind": "modulated_gamma", "cv2": cv2, "seed": seed, "cv2_asked": cv2,
        "cv2_asked_applies_to": "local gaps at a steady rate; rate changes add to the measured CV^2",
    }).record_measured()


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


def ipp_cv2(burst_rate: float, on_s: float, off_s: float) -> float:
    """Inter-arrival CV^2 of an interrupted Poisson process: Poisson at ``burst_rate`` during
    exponential on periods of mean ``on_s``, silent during exponential off periods of mean
    ``off_s``. Its gaps are hyperexponential with CV^2 = 1 + 2 lambda w_on / (w_on + w_off)^2,
    where w_on = 1/on_s and w_off = 1/off_s are the rates of leaving each state."""
    w_on, w_off = 1.0 / on_s, 1.0 / off_s
    return 1.0 + 2.0 * burst_rate * w_on / (w_on + w_off) ** 2


def onoff_parameters(mean_rate: float, cv2: float, burst_ms: float) -> dict[str, float]:
    """The on/off process with mean ``mean_rate``, inter-arrival CV^2 ``cv2`` and mean burst
    (on period) ``burst_ms``: on fraction, rate during a burst and mean off period.

    With on fraction p, burst rate lambda = mean/p and off mean on*(1-p)/p, the CV^2 formula of
    :func:`ipp_cv2` becomes CV^2 - 1 = 2 mean on (1-p)^2 / p, a quadratic in p whose root in
    (0, 1) is taken. A higher CV^2 at the same burst length means rarer, denser bursts."""
    if mean_rate <= 0 or burst_ms <= 0:
        raise ValueError("mean_rate and burst_ms must be > 0")
    if cv2 <= 1.0:
        raise ValueError(f"an on/off Poisson process has CV^2 > 1 (asked {cv2:g}); use gamma() for CV^2 <= 1")
    on_s = burst_ms / 1e3
    k = (cv2 - 1.0) / (2.0 * mean_rate * on_s)
    p = ((2.0 + k) - np.sqrt((2.0 + k) ** 2 - 4.0)) / 2.0
    return {"on_fraction": float(p), "burst_rate": float(mean_rate / p), "on_ms": float(burst_ms),
            "off_ms": float(burst_ms * (1.0 - p) / p)}


def onoff(mean_rate: float, cv2: float, duration_s: float, *, burst_ms: float = 50.0,
          seed: int | np.random.Generator | None = 0) -> Trace:
    """Heavy bursts: an on/off Markov-modulated Poisson process (MMPP-2 with a silent state).

    Bursts last Exp(mean ``burst_ms``) and arrive as a Poisson stream at the burst rate;
    silences last Exp(mean off_ms). Burst rate and off_ms follow from the target inter-arrival
    CV^2 ``cv2`` (> 1) and the mean rate in closed form (:func:`onoff_parameters`), so the
    whole stream's CV^2 is ``cv2`` in expectation; ``meta`` records the asked and the measured
    values. CV^2 50-500 at 1,000 req/s and 50 ms bursts means bursts at 2-7x the mean rate
    separated by 0.05-0.3 s of silence.

    CV^2 - 1 grows with mean_rate x burst length (:func:`onoff_parameters`): at 20,000 req/s
    the same CV^2 200 with 50 ms bursts needs bursts only about 1.4x the mean. At high rates,
    choose the burst rate lambda first and ask for the CV^2 that goes with it,
    ``ipp_cv2(lambda, on_s, on_s * (lambda / mean_rate - 1))``; ``peak_to_mean_100ms`` in
    ``meta`` says more about the load than CV^2 does."""
    par = onoff_parameters(mean_rate, cv2, burst_ms)
    rng = _rng(seed)
    on_s, off_s, lam = par["on_ms"] / 1e3, par["off_ms"] / 1e3, par["burst_rate"]
    cycle = on_s + off_s
    n_cycles = int(duration_s / cycle + 6 * np.sqrt(duration_s / cycle) + 8)
    while True:
        ons = rng.exponential(on_s, n_cycles)
        offs = rng.exponential(off_s, n_cycles)
        # Stationary start: the state at time 0 is "on" with probability p; exponential periods
        # are memoryless, so the residual of the current period is a fresh draw.
        lead_off = 0.0 if rng.uniform() < par["on_fraction"] else rng.exponential(off_s)
        if lead_off + ons.sum() + offs[:-1].sum() >= duration_s:
            break
        n_cycles *= 2
    starts = lead_off + np.concatenate([[0.0], np.cumsum(ons + offs)[:-1]])
    on_end = np.cumsum(ons)  # cumulative on-time at the end of each burst
    total_on = float(on_end[-1])
    # Poisson arrivals on the concatenated on-time axis, then each shifted to its burst.
    count = rng.poisson(lam * total_on)
    u = np.sort(rng.uniform(0.0, total_on, count))
    k = np.searchsorted(on_end, u, side="right")
    t = starts[k] + (u - (on_end[k] - ons[k]))
    t = t[t < duration_s]
    inside = starts < duration_s
    realised_on = np.minimum(ons[inside], duration_s - starts[inside])
    tr = Trace(t, f"onoff-{mean_rate:g}-cv{cv2:g}-on{burst_ms:g}ms", {
        "kind": "onoff", "mean_rate": mean_rate, "duration_s": duration_s,
        "seed": None if isinstance(seed, np.random.Generator) else seed, "cv2_asked": cv2, **par,
        "bursts": int(inside.sum()),
        "on_ms_realised": float(realised_on.mean() * 1e3) if realised_on.size else None})
    return tr.record_measured()
