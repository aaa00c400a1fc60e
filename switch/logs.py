"""Structured logs: one JSON object per line (DESIGN §7). A message's fields travel in the
record's ``fields`` extra; PANs reach the log masked, never whole.

>>> import logging
>>> record = logging.LogRecord("medswitch.terminal", logging.INFO, "", 0, "message", (), None)
>>> record.fields = {"mti": "0200", "rc": "00"}
>>> line = JsonFormatter().format(record)
>>> json.loads(line)["mti"], json.loads(line)["msg"]
('0200', 'message')
"""

from __future__ import annotations

import datetime as dt
import json
import logging


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


def configure(level: int = logging.INFO) -> None:
    """JSON lines on stderr for the whole process."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
