"""Lifecycle events of one server (worker died / restarting / ready / given up, shutdown),
as JSON lines, so tests and benchmarks can time recoveries exactly instead of parsing logs.

Each line carries ``t`` on ``time.monotonic()`` (CLOCK_MONOTONIC: the same clock in every
process on the machine, so a benchmark can subtract its own kill time) and ``wall``.
Events are rare (a handful per worker death), so writing and flushing each line on the
router's loop costs nothing that matters.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from superserve.serving.logs import log

# Events logged as warnings (the rest as info): something an operator should look at.
WARNING_EVENTS = frozenset({"insecure_bind", "poison_request", "worker_died", "worker_given_up",
                            "worker_spawn_failed", "calibration_error"})


class EventLog:
    def __init__(self, path: str | Path | None = None, echo: bool = True) -> None:
        """``echo``: also log each event that has a message (superserve/serving/logs.py)."""
        self._file = open(path, "a", buffering=1) if path else None  # line-buffered
        self._echo = echo

    def emit(self, event: str, message: str = "", **fields: Any) -> None:
        record = {"event": event, "t": time.monotonic(), "wall": time.time(), **fields}
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
        if self._echo and message:
            warn = event in WARNING_EVENTS or message.lower().startswith("warning")
            log(logging.WARNING if warn else logging.INFO, message, event=event, **fields)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Every complete event line of ``path`` (a line being written is skipped)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out
