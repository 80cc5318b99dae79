"""Logging: one JSON object per line (or plain text), stable event names, no secrets."""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar

from listener.redact import scrub

# The model a coroutine works on; every line it logs carries it.
current_model_id: ContextVar[str | None] = ContextVar("current_model_id", default=None)

_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
# Libraries whose INFO lines would drown the listener's own: only their warnings are shown.
NOISY_LOGGERS = (
    "aiobotocore",
    "botocore",
    "urllib3",
    "asyncio",
    "aiohttp.access",
    "httpx",
    "httpcore",
    "werkzeug",  # the local S3 of the demo and the tests
)


def quiet_noisy_loggers() -> None:
    """Shows only the warnings of the libraries in NOISY_LOGGERS."""
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields = {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}
    model_id = current_model_id.get()
    if model_id is not None:
        fields.setdefault("model_id", model_id)
    return fields


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "event", "logger", ...fields}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "logger": record.name,
        }
        line.update(_fields(record))
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return scrub(json.dumps(line, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """`time level event key=value ...` for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        pairs = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        text = f"{stamp} {record.levelname.lower():7} {record.getMessage()} {pairs}".rstrip()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return scrub(text)


def configure_logging(log_format: str = "json", level: int = logging.INFO) -> None:
    """Sends every log line to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_noisy_loggers()
