"""The serving system: router (EDF queue + policy), SuperNet worker processes, KServe v2
REST and gRPC front ends, Prometheus metrics. See docs/serving.md.

Importing this package is cheap (no torch, no gRPC): the server pieces load in the server
process; clients need only :class:`ServerProcess` / :func:`start_server`.
"""
from superserve.serving.config import ServeConfig
from superserve.serving.process import ServerProcess, start_server

__all__ = ["ServeConfig", "ServerProcess", "start_server"]
