"""Scheduling core shared by the live router and the simulator: requests, the EDF queue and
the policies (SlackFit and the paper's baselines)."""
from __future__ import annotations

from typing import Callable

from superserve.scheduling.baselines import INFaaS, ClipperPlus, MaxAcc, MaxBatch
from superserve.scheduling.edf_queue import EdfQueue, QueueFull
from superserve.scheduling.policy import Decision, Policy, PolicyKind, PolicyOptions, take_batch
from superserve.scheduling.profile import LatencyProfile
from superserve.scheduling.request import Request
from superserve.scheduling.slackfit import SlackFit
from superserve.scheduling.slackfit_paper import SlackFitPaper

POLICY_NAMES = tuple(k.value for k in PolicyKind)
_POLICY_CLASSES: dict[PolicyKind, Callable[..., Policy]] = {
    PolicyKind.SLACKFIT: SlackFit, PolicyKind.SLACKFIT_PAPER: SlackFitPaper, PolicyKind.MAXBATCH: MaxBatch,
    PolicyKind.MAXACC: MaxAcc, PolicyKind.CLIPPER_PLUS: ClipperPlus, PolicyKind.INFAAS: INFaaS}


def make_policy(name: str | PolicyKind, profile: LatencyProfile, **params: object) -> Policy:
    """Build a policy by name (see :meth:`PolicyKind.parse`), e.g. ``make_policy("clipper+", p,
    subnet_id="s03")`` or ``make_policy("slackfit-paper", p, num_buckets=16, overhead_ms=0.2)``."""
    kind = PolicyKind.parse(name)
    if kind.needs_subnet and "subnet_id" not in params:
        raise ValueError(f"{kind.value} needs subnet_id=<a SubNet id of the profile>")
    return _POLICY_CLASSES[kind](profile, **params)


__all__ = ["Request", "EdfQueue", "QueueFull", "Decision", "Policy", "take_batch", "SlackFit",
           "SlackFitPaper", "MaxBatch", "MaxAcc", "ClipperPlus", "INFaaS", "make_policy", "POLICY_NAMES",
           "PolicyKind", "PolicyOptions", "LatencyProfile"]
