"""Workloads written on one command-line word: ``KIND:key=value,key=value``.

Examples::

    poisson:rate=800,duration=30
    gamma:rate=800,cv2=4,duration=30
    bursty:base=400,rate=400,cv2=8,duration=60      # base stream + Gamma stream
    timevarying:start=300,end=900,tau=100,cv2=8
    file:/path/trace.npz
"""
from __future__ import annotations

from superserve.workload import Trace, bursty, gamma, poisson, time_varying

KINDS = ("poisson", "gamma", "bursty", "timevarying", "file")
_KEYS = {
    "poisson": {"rate", "duration", "seed"},
    "gamma": {"rate", "cv2", "duration", "seed"},
    "bursty": {"base", "rate", "cv2", "duration", "seed", "base_cv2"},
    "timevarying": {"start", "end", "tau", "cv2", "hold_start", "hold_end", "seed"},
}


def parse_workload(spec: str) -> Trace:
    """The trace a spec describes (see the module docstring)."""
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower().replace("-", "").replace("_", "")
    if kind not in KINDS:
        raise ValueError(f"unknown workload {kind!r} in {spec!r}; kinds: {', '.join(KINDS)}")
    if kind == "file":
        return Trace.load(rest)
    params: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in _KEYS[kind]:
            raise ValueError(f"{spec!r}: {item!r} is not one of {sorted(_KEYS[kind])} as key=value")
        params[key] = float(value)
    seed = int(params.pop("seed", 0))
    need = {"poisson": ("rate", "duration"), "gamma": ("rate", "cv2", "duration"),
            "bursty": ("base", "rate", "cv2", "duration"), "timevarying": ("start", "end", "tau")}[kind]
    missing = [k for k in need if k not in params]
    if missing:
        raise ValueError(f"{spec!r}: missing {', '.join(missing)}")
    p = params
    if kind == "poisson":
        return poisson(p["rate"], p["duration"], seed)
    if kind == "gamma":
        return gamma(p["rate"], p["cv2"], p["duration"], seed)
    if kind == "bursty":
        return bursty(p["base"], p["rate"], p["cv2"], p["duration"], seed, base_cv2=p.get("base_cv2", 0.0))
    return time_varying(p["start"], p["end"], p["tau"], p.get("cv2", 8.0), hold_start_s=p.get("hold_start", 2.0),
                        hold_end_s=p.get("hold_end", 5.0), seed=seed)
