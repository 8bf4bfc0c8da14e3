"""Workloads: synthetic arrival processes, real-trace loaders and the Trace file format."""
from superserve.workload.arrivals import bursty, gamma, modulated_gamma, poisson, time_varying
from superserve.workload.trace import Trace
from superserve.workload.traces import azure_functions, azure_functions_minute_counts, timestamped

__all__ = ["Trace", "poisson", "gamma", "bursty", "time_varying", "modulated_gamma",
           "azure_functions", "azure_functions_minute_counts", "timestamped"]
