"""What happened to one request: one vocabulary for the router, its metrics, the simulator
and the load client, and one map onto HTTP and gRPC statuses.

The integer values are stored in result arrays (the simulator's and the load client's
``outcome`` columns, saved ``.npz`` records), so they never change; ``label`` is the name
that metrics, JSON and reports use.
"""
from __future__ import annotations

import enum


class Outcome(enum.IntEnum):
    IN_TIME = 0  # answered by its deadline
    LATE = 1  # answered after its deadline
    SHED = 2  # answered "cannot meet the deadline" without running
    REJECTED = 3  # refused at once: the queue was at its bound
    REFUSED = 4  # an invalid request (malformed, unknown model, too large, unauthorised)
    ERROR = 5  # the server failed to serve it (the batch failed; the client: any other status)
    TIMEOUT = 6  # client only: no answer within the client's timeout
    CONN_ERROR = 7  # client only: the connection failed
    NOT_SENT = 8  # client only: never issued (must not survive a finished run)
    UNAVAILABLE = 9  # not ready, shutting down, or no live worker
    FLOOR_UNMET = 10  # a strict accuracy floor (min_accuracy_strict) no SubNet can serve in time

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def answered(self) -> bool:
        """The request ran and its answer carries an inference result."""
        return self is Outcome.IN_TIME or self is Outcome.LATE

    @property
    def http_status(self) -> int | None:
        """The HTTP status the server answers with (None: the client's own outcomes)."""
        return HTTP_STATUS.get(self)

    @property
    def grpc_code(self) -> str | None:
        """The gRPC status code name the server answers with (None: the client's own)."""
        return GRPC_CODE.get(self)

    @classmethod
    def from_label(cls, label: str) -> "Outcome":
        try:
            return cls[label.upper()]
        except KeyError:
            raise ValueError(f"unknown outcome {label!r}; one of {', '.join(o.label for o in cls)}") from None


# What the server can answer (the router's and the metrics' outcomes), in the metrics' order.
SERVER_OUTCOMES = (Outcome.IN_TIME, Outcome.LATE, Outcome.SHED, Outcome.REJECTED, Outcome.UNAVAILABLE,
                   Outcome.ERROR, Outcome.FLOOR_UNMET)
# What the simulator produces.
SIM_OUTCOMES = (Outcome.IN_TIME, Outcome.LATE, Outcome.SHED, Outcome.REJECTED)

# REFUSED's status depends on why (400, 401, 404, 408, 413); 400 is the usual one.
HTTP_STATUS = {Outcome.IN_TIME: 200, Outcome.LATE: 200, Outcome.SHED: 504, Outcome.REJECTED: 429,
               Outcome.REFUSED: 400, Outcome.ERROR: 500, Outcome.UNAVAILABLE: 503, Outcome.FLOOR_UNMET: 422}
GRPC_CODE = {Outcome.IN_TIME: "OK", Outcome.LATE: "OK", Outcome.SHED: "DEADLINE_EXCEEDED",
             Outcome.REJECTED: "RESOURCE_EXHAUSTED", Outcome.REFUSED: "INVALID_ARGUMENT",
             Outcome.ERROR: "INTERNAL", Outcome.UNAVAILABLE: "UNAVAILABLE",
             Outcome.FLOOR_UNMET: "FAILED_PRECONDITION"}
# gRPC trailing-metadata key under which the server sends the outcome label of a router answer
# that is an error (REST puts it in the error body): a client tells a shed request from its
# own deadline passing, and "no live worker" from "cannot connect", by it.
GRPC_OUTCOME_METADATA = "superserve-outcome"
