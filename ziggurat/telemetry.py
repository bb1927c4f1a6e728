"""Structured logging and the request-id context, importable from any layer.

Logs are one JSON object per line (`event` plus key/values), so they can be
shipped and queried without parsing prose. The request id (and the user
id once authenticated, and the trace id while tracing) travels in a contextvar,
so every log line of a request carries it without being passed down. Prompts,
completions and secrets are never logged by default: only
`ZIGGURAT_LOG__LOG_PROMPTS=true` logs prompts (`generation_prompt` events).
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import Any, TextIO

import orjson

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
user_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("user_id", default=None)
trace_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace_id", default=None)
"""Set by the tracer while a span is open (tracing on only), so logs and traces can be joined."""

# uvicorn adds `color_message` (the same text with ANSI colours) to its records.
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the request, user and trace id when known."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            payload["request_id"] = request_id
        user_id = user_id_var.get()
        if user_id:
            payload["user_id"] = user_id
        trace_id = trace_id_var.get()
        if trace_id:
            payload["trace_id"] = trace_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(payload, default=str).decode()


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal: `time level event key=value ...`."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{key}={value}"
            for key, value in record.__dict__.items()
            if key not in _RESERVED and not key.startswith("_")
        )
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname:<7} {record.getMessage()} {extras}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class StructLogger:
    """`log.info("job_admitted", priority=9)`: an event name plus structured fields."""

    __slots__ = ("_logger",)

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)

    def _log(self, level: int, event: str, exc_info: bool, fields: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, event, extra=fields, exc_info=exc_info, stacklevel=3)

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, False, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, False, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, False, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, False, fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, True, fields)


def get_logger(name: str) -> StructLogger:
    return StructLogger(name)


# Libraries whose DEBUG lines quote the data they handle: aiosqlite logs every SQL
# parameter (message text, password and key hashes). They never log below INFO.
_DATA_QUOTING_LOGGERS = ("aiosqlite",)


def configure_logging(*, level: str, json_format: bool | None, stream: TextIO | None = None) -> None:
    """Install one handler on the root logger, writing to `stream` (stderr), called by the CLI, not on import.

    `json_format=None` picks readable text for a terminal and JSON lines otherwise
    (log shippers, containers, CI).
    """
    stream = stream or sys.stderr
    if json_format is None:
        json_format = not stream.isatty()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json_format else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).disabled = True
    for name in _DATA_QUOTING_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, root.getEffectiveLevel()))
