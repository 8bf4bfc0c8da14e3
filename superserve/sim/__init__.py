"""Discrete-event simulation of the router with the very same queue and policy objects."""
from superserve.sim.result import IN_TIME, LATE, OUTCOME_NAMES, REJECTED, SHED, SimResult
from superserve.sim.simulator import Simulation, Tie, simulate

__all__ = ["simulate", "Simulation", "Tie", "SimResult", "IN_TIME", "LATE", "SHED", "REJECTED", "OUTCOME_NAMES"]
