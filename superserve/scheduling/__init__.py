"""Scheduling core shared by the live router and the simulator: requests, the EDF queue and
the policies (SlackFit and the paper's baselines)."""
from __future__ import annotations

from superserve.profiling.latency_profile import LatencyProfile
from superserve.scheduling.baselines import INFaaS, ClipperPlus, MaxAcc, MaxBatch
from superserve.scheduling.edf_queue import EdfQueue, QueueFull
from superserve.scheduling.policy import Decision, Policy, take_batch
from superserve.scheduling.request import Request
from superserve.scheduling.slackfit import SlackFit
from superserve.scheduling.slackfit_paper import SlackFitPaper

POLICY_NAMES = ("slackfit", "slackfit-paper", "maxbatch", "maxacc", "clipper+", "infaas")


def make_policy(name: str, profile: LatencyProfile, **params: object) -> Policy:
    """Build a policy by name, e.g. ``make_policy("clipper+", p, subnet_id="s03")`` or
    ``make_policy("slackfit", p, num_buckets=16, overhead_ms=0.2)``."""
    key = name.lower().replace("_", "").replace("-", "")
    if key == "slackfit":
        return SlackFit(profile, **params)  # type: ignore[arg-type]
    if key == "slackfitpaper":
        return SlackFitPaper(profile, **params)  # type: ignore[arg-type]
    if key == "maxbatch":
        return MaxBatch(profile, **params)  # type: ignore[arg-type]
    if key == "maxacc":
        return MaxAcc(profile, **params)  # type: ignore[arg-type]
    if key in ("clipper+", "clipperplus", "clipper", "fixed"):
        if "subnet_id" not in params:
            raise ValueError("clipper+ needs subnet_id=<a SubNet id of the profile>")
        return ClipperPlus(profile, **params)  # type: ignore[arg-type]
    if key == "infaas":
        return INFaaS(profile, **params)  # type: ignore[arg-type]
    raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICY_NAMES)}")


__all__ = ["Request", "EdfQueue", "QueueFull", "Decision", "Policy", "take_batch", "SlackFit",
           "SlackFitPaper", "MaxBatch", "MaxAcc", "ClipperPlus", "INFaaS", "make_policy", "POLICY_NAMES"]
