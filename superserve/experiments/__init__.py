"""Experiments that compose the parts: a real server (superserve.serving), the open-loop
client (superserve.loadgen) and the simulator (superserve.sim) on one trace.

* ``comparison``: the live policy comparison with the simulator's prediction beside each row
  (shared by `superserve demo` and benchmarks/live.py).
* ``demo``: the `superserve demo` command.
* ``raw_rate``: the serving ceiling, the worker configuration in a tight loop, no server.
"""
