"""When a dead worker is restarted: exponential back-off, a limit per window, a cool-down.

A plain value type shared by the configuration (which builds it from its fields) and the
:class:`~superserve.serving.supervisor.Supervisor` (which applies it); it imports nothing
of the server, so ``config -> restart`` and ``supervisor -> restart`` form no cycle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    enabled: bool = True
    backoff_s: float = 0.1  # delay before the first restart of a slot
    backoff_factor: float = 2.0  # each further death within the window multiplies it
    backoff_max_s: float = 10.0
    max_deaths: int = 5  # this many deaths of one slot within window_s: give up on it ...
    window_s: float = 60.0
    # ... for this long, then restart it with a fresh window (None: for good). A slot given up
    # for good never comes back, and the server's liveness fails once no slot can.
    cooldown_s: float | None = 60.0

    def __post_init__(self) -> None:
        if not (0 <= self.backoff_s <= self.backoff_max_s and math.isfinite(self.backoff_max_s)) \
                or not self.backoff_factor >= 1:
            raise ValueError("restart back-off needs 0 <= backoff_s <= backoff_max_s (finite) and factor >= 1")
        if self.max_deaths < 1 or not 0 < self.window_s < math.inf:
            raise ValueError("restart limit needs max_deaths >= 1 and a finite window_s > 0")
        if self.cooldown_s is not None and not 0 < self.cooldown_s < math.inf:
            raise ValueError(f"restart cool-down must be a finite number of seconds > 0 or None (never), "
                             f"not {self.cooldown_s!r}")

    def delay(self, recent_deaths: int) -> float | None:
        """Seconds to wait before restarting a slot that died ``recent_deaths`` times within
        the window (this death included); None: do not restart it (give up)."""
        if not self.enabled or recent_deaths >= self.max_deaths:
            return None
        return min(self.backoff_max_s, self.backoff_s * self.backoff_factor ** (recent_deaths - 1))
