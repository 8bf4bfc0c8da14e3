"""Open-loop load generation against a KServe v2 server: replay a Trace at its scheduled
send times with real labelled images, and report what the client measured."""
from superserve.loadgen.payloads import PayloadSet, build_payloads, payloads_from_bundle
from superserve.loadgen.records import OUTCOME_NAMES, ReplayRecords
from superserve.loadgen.report import plot_run, summarize, time_series, write_json
from superserve.loadgen.runner import ReplayRun, replay
from superserve.loadgen.sender import SenderConfig

__all__ = ["PayloadSet", "build_payloads", "payloads_from_bundle", "ReplayRecords", "OUTCOME_NAMES",
           "summarize", "time_series", "write_json", "plot_run", "ReplayRun", "replay", "SenderConfig"]
