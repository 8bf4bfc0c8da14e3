"""One exception class per answer a superserve server can give instead of a prediction, and
for the two failures that happen before any answer (timeout, connection). All derive from
:class:`SuperserveError`, so ``except SuperserveError`` catches everything the client raises
about a call, and each subclass names what to do differently.

The server says what happened in two ways: the status (HTTP status or gRPC code) and, for the
router's own outcomes, the outcome label (REST error body ``"outcome"``; gRPC trailing
metadata ``superserve.outcome.GRPC_OUTCOME_METADATA``). The label wins: on gRPC it is what
tells a shed request (DEADLINE_EXCEEDED from the server) from this client's own deadline
passing (DEADLINE_EXCEEDED from the gRPC library), and a server with no live worker
(UNAVAILABLE) from a server that cannot be reached (UNAVAILABLE too).
"""
from __future__ import annotations

from superserve.outcome import Outcome


class SuperserveError(Exception):
    """A call did not return a prediction. ``status``: the HTTP status (REST) or None;
    ``code``: the gRPC status code name (gRPC) or None; ``outcome``: the server's outcome
    label (``shed``, ``rejected``, ...) when its router answered, else None."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 outcome: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.outcome = outcome


class RequestShed(SuperserveError):
    """The deadline could not be met, so the server answered at once without running it
    (HTTP 504, gRPC DEADLINE_EXCEEDED, outcome ``shed``): raise ``slo_ms`` or lower the load."""


class Overloaded(SuperserveError):
    """The server's queue was full (HTTP 429, gRPC RESOURCE_EXHAUSTED, outcome ``rejected``):
    back off and retry."""


class Unavailable(SuperserveError):
    """The server is warming up, shutting down or has no live worker (HTTP 503, gRPC
    UNAVAILABLE, outcome ``unavailable``): retry later, or elsewhere."""


class AccuracyFloorUnmet(SuperserveError):
    """``strict`` was set and no SubNet reaching ``min_accuracy`` could serve the request in
    time (HTTP 422, gRPC FAILED_PRECONDITION, outcome ``floor_unmet``)."""


class BadRequest(SuperserveError):
    """The server refused the request as sent (HTTP 400, also 408 and 413; gRPC
    INVALID_ARGUMENT): the message says which part (shape, datatype, values, parameters)."""


class Unauthorized(SuperserveError):
    """No or a wrong bearer token (HTTP 401, gRPC UNAUTHENTICATED): pass ``token=``."""


class NotFound(SuperserveError):
    """The server does not serve this model name or version (HTTP 404, gRPC NOT_FOUND)."""


class ServerError(SuperserveError):
    """The server failed to serve the request (HTTP 500, gRPC INTERNAL, outcome ``error``;
    also any status this client does not know, and an answer it cannot read): the message
    says why."""


class Timeout(SuperserveError, TimeoutError):
    """No answer within the client's timeout."""


class ConnectionFailed(SuperserveError, ConnectionError):
    """The server could not be reached, the connection broke, or TLS failed."""


_BY_OUTCOME: dict[str, type[SuperserveError]] = {
    Outcome.SHED.label: RequestShed, Outcome.REJECTED.label: Overloaded, Outcome.UNAVAILABLE.label: Unavailable,
    Outcome.FLOOR_UNMET.label: AccuracyFloorUnmet, Outcome.ERROR.label: ServerError,
}
_BY_STATUS: dict[int, type[SuperserveError]] = {
    400: BadRequest, 408: BadRequest, 413: BadRequest, 401: Unauthorized, 404: NotFound,
    422: AccuracyFloorUnmet, 429: Overloaded, 500: ServerError, 503: Unavailable, 504: RequestShed,
}
# Without an outcome label a gRPC code comes from the server's front end (invalid input,
# token, model name; RESOURCE_EXHAUSTED: a message over the size limit) or from the gRPC
# library itself (DEADLINE_EXCEEDED: this client's timeout; UNAVAILABLE: no connection).
_BY_GRPC_CODE: dict[str, type[SuperserveError]] = {
    "INVALID_ARGUMENT": BadRequest, "RESOURCE_EXHAUSTED": BadRequest, "UNAUTHENTICATED": Unauthorized,
    "NOT_FOUND": NotFound, "DEADLINE_EXCEEDED": Timeout, "UNAVAILABLE": ConnectionFailed,
}


def http_error(status: int, message: str, outcome: str | None) -> SuperserveError:
    """The exception for a REST answer with a non-200 ``status``."""
    cls = _BY_OUTCOME.get(outcome or "") or _BY_STATUS.get(status)
    if cls is None:
        cls = BadRequest if 400 <= status < 500 else ServerError
    return cls(f"HTTP {status}: {message}", status=status, outcome=outcome)


def grpc_error(code: str, message: str, outcome: str | None) -> SuperserveError:
    """The exception for a failed gRPC call with status code name ``code``."""
    cls = _BY_OUTCOME.get(outcome or "") or _BY_GRPC_CODE.get(code, ServerError)
    return cls(f"gRPC {code}: {message}", code=code, outcome=outcome)
