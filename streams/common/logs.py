"""Logs: one JSON object a line (or plain text), credentials masked, HTTP clients quiet."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from streams.common.redaction import redact

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

# HTTP client libraries that log every request at INFO, URL included (credentials too when
# they are in it): confluent-kafka's schema-registry client goes through httpx2/httpcore2
# (httpx/httpcore when that is what is installed).
QUIET_LOGGERS = ("httpx", "httpcore", "httpx2", "httpcore2", "urllib3", "faiss", "onnxruntime",
                 "sentence_transformers")

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class RedactingFormatter(logging.Formatter):
    """Any formatter's line with URL credentials masked (``streams.common.redaction.redact``)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra}``: one line per record, for log shippers;
    credentials in URLs are masked."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(self._json(record))

    def _json(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        payload.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(level: str = "INFO", *, json_lines: bool = True) -> None:
    """Configure the root logger once, at a process entry point."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else RedactingFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_http_clients(root.level)


def quiet_http_clients(level: int = logging.INFO) -> None:
    """Raise the HTTP client loggers to WARNING (or ``level`` if higher)."""
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, level))


