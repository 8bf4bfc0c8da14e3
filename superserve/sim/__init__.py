"""Discrete-event simulation of the router with the very same queue and policy objects."""
from superserve.sim.result import IN_TIME, LATE, OUTCOME_NAMES, SHED, SimResult
from superserve.sim.simulator import simulate

__all__ = ["simulate", "SimResult", "IN_TIME", "LATE", "SHED", "OUTCOME_NAMES"]
