"""Logging set-up, and the guarantee that secrets never reach a log line.

Client libraries log what they send at DEBUG level (aiokafka logs the SASL
PLAIN request, password included).  Every handler dnpfs installs carries a
filter that replaces each registered secret with ``***`` in the final
message, whatever logger produced it.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Never log *value* (a password read from a config file)."""
    if value:
        _secrets.add(value)


class _Redact(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            message = record.getMessage()
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            text = record.exc_text or ""
            for secret in _secrets:
                message = message.replace(secret, "***")
                text = text.replace(secret, "***")
            record.msg, record.args, record.exc_text = message, None, text or None
        return True


class _Json(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}
        if record.exc_text or record.exc_info:
            entry["traceback"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry)


def setup(debug: bool, log_file: Path | None, fmt: str = "text") -> None:
    """Log to stderr (foreground) or *log_file*, one line per event."""
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
    handler.setFormatter(_Json() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_Redact())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:
        logging.getLogger("pyfuse3").setLevel(logging.WARNING)
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
