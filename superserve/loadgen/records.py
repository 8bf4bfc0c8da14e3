"""Per-request records of a replay: one row per scheduled request, whatever happened to it.

Every request of the trace gets exactly one row. The client classifies each answer itself,
from what it saw: an HTTP 200 answered within ``slo_ms`` of the request's *scheduled* send
time is in time; any other answer (late, shed, overloaded, refused, failed, never answered)
is a miss. The server's own view (its ``outcome`` parameter) is kept beside it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from superserve.outcome import Outcome

# The client's outcomes are superserve.outcome.Outcome codes 0..8 (UNAVAILABLE, 9, and
# FLOOR_UNMET, 10, are the server's: the client counts a 503 with the 504s as shed, "not served
# now", and a 422 as refused). NOT_SENT must never survive a finished run (tests check it).
CLIENT_OUTCOMES = tuple(o for o in Outcome if o < Outcome.UNAVAILABLE)
IN_TIME, LATE, SHED, REJECTED, REFUSED, ERROR, TIMEOUT, CONN_ERROR, NOT_SENT = CLIENT_OUTCOMES
# The report labels two of them by what the client saw: a 429 "overloaded", any other failing
# status "http_error" (saved runs, benchmarks and docs read these labels).
REPORT_LABELS = {REJECTED: "overloaded", ERROR: "http_error"}
OUTCOME_NAMES = tuple(REPORT_LABELS.get(o, o.label) for o in CLIENT_OUTCOMES)
OVERLOADED, HTTP_ERROR = REJECTED, ERROR  # the report's names for them
# Pseudo HTTP statuses for answers that never came.
STATUS_TIMEOUT, STATUS_CONN_ERROR, STATUS_NOT_SENT = -1, -2, 0


def classify(status: np.ndarray, latency_s: np.ndarray, slo_s: float) -> np.ndarray:
    """Outcome code per request from its HTTP status and client-measured latency."""
    out = np.full(status.shape, ERROR, dtype=np.int8)
    ok = status == 200
    out[ok & (latency_s <= slo_s)] = IN_TIME
    out[ok & ~(latency_s <= slo_s)] = LATE
    out[(status == Outcome.UNAVAILABLE.http_status) | (status == Outcome.SHED.http_status)] = SHED
    out[status == REJECTED.http_status] = REJECTED
    out[(status >= 400) & (status < 500) & (status != REJECTED.http_status)] = REFUSED
    out[status == STATUS_TIMEOUT] = TIMEOUT
    out[status == STATUS_CONN_ERROR] = CONN_ERROR
    out[status == STATUS_NOT_SENT] = NOT_SENT
    return out


@dataclass
class ReplayRecords:
    """Column arrays, index = request index in the trace. Times in seconds from the trace
    start; ``nan`` / -1 where an answer did not carry the field."""

    scheduled_s: np.ndarray  # when the trace said to send it
    lag_s: np.ndarray  # how late the client actually issued it (send lag)
    latency_s: np.ndarray  # answer time - scheduled time (nan if never answered)
    status: np.ndarray  # HTTP status, or STATUS_TIMEOUT / STATUS_CONN_ERROR / STATUS_NOT_SENT
    outcome: np.ndarray  # client outcome code (see OUTCOME_NAMES)
    subnet: np.ndarray  # index into subnet_ids, -1 if none
    accuracy: np.ndarray  # profiled accuracy of the SubNet that served it
    batch_size: np.ndarray
    queue_ms: np.ndarray
    compute_ms: np.ndarray
    predicted: np.ndarray  # predicted class, -1 if none
    label: np.ndarray  # true class of the image sent
    server_outcome: np.ndarray  # index into server_outcomes, -1 if none
    subnet_ids: list[str] = field(default_factory=list)
    server_outcomes: list[str] = field(default_factory=list)
    slo_s: float = float("nan")

    def __len__(self) -> int:
        return int(self.scheduled_s.size)

    @classmethod
    def empty(cls, scheduled_s: np.ndarray, labels: np.ndarray, slo_s: float) -> "ReplayRecords":
        n = scheduled_s.size
        nan = lambda: np.full(n, np.nan)  # noqa: E731
        neg = lambda: np.full(n, -1, dtype=np.int32)  # noqa: E731
        return cls(np.asarray(scheduled_s, dtype=np.float64), nan(), nan(),
                   np.full(n, STATUS_NOT_SENT, dtype=np.int16), np.full(n, NOT_SENT, dtype=np.int8),
                   neg(), nan(), neg(), nan(), nan(), neg(), np.asarray(labels, dtype=np.int32), neg(),
                   slo_s=slo_s)

    def counts(self) -> dict[str, int]:
        c = np.bincount(self.outcome.astype(np.int64), minlength=len(OUTCOME_NAMES))
        return {name: int(c[k]) for k, name in enumerate(OUTCOME_NAMES)}

    def save(self, path: str | Path) -> Path:
        """Write every column (.npz) plus the string tables."""
        path = Path(path)
        arrays = {f.name: getattr(self, f.name) for f in fields(self)
                  if isinstance(getattr(self, f.name), np.ndarray)}
        np.savez_compressed(path, **arrays, subnet_ids=np.array(self.subnet_ids, dtype=str),
                            server_outcomes=np.array(self.server_outcomes, dtype=str),
                            slo_s=np.array(self.slo_s), outcome_names=np.array(OUTCOME_NAMES))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ReplayRecords":
        with np.load(path, allow_pickle=False) as d:
            kw: dict[str, Any] = {f.name: d[f.name] for f in fields(cls)
                                  if f.name not in ("subnet_ids", "server_outcomes", "slo_s")}
            return cls(**kw, subnet_ids=[str(s) for s in d["subnet_ids"]],
                       server_outcomes=[str(s) for s in d["server_outcomes"]], slo_s=float(d["slo_s"]))
