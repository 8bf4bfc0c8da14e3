"""The server's log: one line per record on stderr, as text (``superserve: message``) or as
JSON objects (``--log-format json``) for log collectors (Loki, Elasticsearch, CloudWatch,
``kubectl logs | jq``).

A JSON line holds ``ts`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``, ``msg``, and
for lifecycle events (superserve/serving/events.py) the event's own fields (``event``,
``worker``, ``pid``, ...), so a collector can filter on them without parsing sentences.
Every logger of the process goes through the same handler (asyncio's and grpc's warnings
included), so no line of the server's own output is left unstructured.
"""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

LOG_FORMATS = ("text", "json")
LOGGER = "superserve"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update({k: v for k, v in fields.items() if k not in line})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(fmt: str, stream: TextIO | None = None) -> None:
    """Send every log record of this process to ``stream`` (stderr) in format ``fmt``."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log_format must be one of {LOG_FORMATS}, not {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter("%(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)  # Python warnings become records too (logger "py.warnings")


def log(level: int, message: str, /, **fields: Any) -> None:
    """One record on the server's logger; ``fields`` become JSON keys (text shows the message)."""
    logging.getLogger(LOGGER).log(level, message, extra={"fields": fields} if fields else None)
