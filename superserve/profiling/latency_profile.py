"""Compatibility name: the latency profile type lives in superserve.scheduling.profile (torch-free,
beside the scheduler that reads it). Import it from there."""
from superserve.scheduling.profile import FORMAT, LatencyProfile, SubnetProfile

__all__ = ["FORMAT", "LatencyProfile", "SubnetProfile"]
