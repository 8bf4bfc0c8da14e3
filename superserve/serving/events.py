"""Lifecycle events of one server (worker died / restarting / ready / given up, shutdown),
as JSON lines, so tests and benchmarks can time recoveries exactly instead of parsing logs.

Each line carries ``t`` on ``time.monotonic()`` (CLOCK_MONOTONIC: the same clock in every
process on the machine, so a benchmark can subtract its own kill time) and ``wall``.
Events are rare (a handful per worker death), so writing and flushing each line on the
router's loop costs nothing that matters.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO


class EventLog:
    def __init__(self, path: str | Path | None = None, echo: TextIO | None = sys.stderr) -> None:
        self._file = open(path, "a", buffering=1) if path else None  # line-buffered
        self._echo = echo

    def emit(self, event: str, message: str = "", **fields: Any) -> None:
        record = {"event": event, "t": time.monotonic(), "wall": time.time(), **fields}
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
        if self._echo is not None and message:
            print(f"superserve: {message}", file=self._echo, flush=True)

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
