"""Workloads: synthetic arrival processes, real-trace loaders and the Trace file format."""
from superserve.workload.arrivals import (bursty, gamma, ipp_cv2, modulated_gamma, onoff, onoff_parameters, poisson,
                                          time_varying)
from superserve.workload.trace import Trace
from superserve.workload.traces import (azure_functions, azure_functions_minute_counts, azure_functions_sample,
                                        azure_llm, bundled_trace_names, bundled_trace_path, timestamped)

__all__ = ["Trace", "poisson", "gamma", "bursty", "time_varying", "modulated_gamma", "onoff", "onoff_parameters",
           "ipp_cv2", "azure_functions", "azure_functions_minute_counts", "azure_functions_sample", "azure_llm",
           "bundled_trace_names", "bundled_trace_path", "timestamped"]
