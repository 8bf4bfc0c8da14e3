"""The Python client of a superserve server: ``Client`` (blocking, thread-safe) and
``AsyncClient`` (asyncio), over KServe v2 REST or gRPC, returning a :class:`Prediction` that
says what served it, and raising one :class:`SuperserveError` subclass per kind of failure.
Importing it loads neither torch nor the server; the transports load on first use."""
from superserve.client.client import AsyncClient, Client
from superserve.client.errors import (AccuracyFloorUnmet, BadRequest, ConnectionFailed, NotFound, Overloaded,
                                      RequestShed, ServerError, SuperserveError, Timeout, Unauthorized, Unavailable)
from superserve.client.prediction import Prediction

__all__ = ["Client", "AsyncClient", "Prediction", "SuperserveError", "RequestShed", "Overloaded", "Unavailable",
           "AccuracyFloorUnmet", "BadRequest", "Unauthorized", "NotFound", "ServerError", "Timeout",
           "ConnectionFailed"]
