"""One inference request as the schedulers see it: when it came, when it is due."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Request:
    """A request waiting for a batch.

    Times are seconds on one clock: the router's monotonic clock, or the simulator's
    virtual clock. ``id`` must be unique among requests queued at the same time (the queue
    breaks deadline ties and performs removals by id).
    """

    id: int
    arrival: float
    deadline: float  # absolute: the answer must be back by then
    min_accuracy: float = 0.0  # the client's accuracy floor; 0 means "any SubNet"
    payload: object = None  # the router's business (input tensor, future); schedulers never look
