"""Structured logs: one JSON object per line, one event per line.

Callers pass ids (user, device, session) as fields; secrets, codes, keys and raw
assertions are never passed, and :data:`REDACTED_FIELDS` is a last line of defence.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

REDACTED_FIELDS = frozenset({"code", "token", "bootstrap_code", "assertion", "credential", "private_key",
                             "authorization", "signature", "password"})

logger = logging.getLogger("idwall")


class JSONLineFormatter(logging.Formatter):
    """Render a record as a JSON line with its structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None) or {}
        for key, value in fields.items():
            line[key] = "[redacted]" if key in REDACTED_FIELDS else value
        if record.exc_info and record.levelno >= logging.ERROR:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, separators=(",", ":"))


def setup_logging(level: str = "info", stream: Any = None) -> None:
    """Send IDWall's logs to ``stream`` (stderr) as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONLineFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


def event(name: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event with structured fields (``user``, ``device``, ``session``...)."""
    logger.log(level, name, extra={"fields": fields})
