"""Logging: one JSON object per line (or plain text), stable event names, no secrets."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
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


# asyncio's words when accept() finds no descriptor left. It says them for every connection waiting
# in the backlog, and again every second it retries: a flood of connections would fill the log.
OUT_OF_RESOURCES = "socket.accept() out of system resource"
OUT_OF_RESOURCES_EVERY_S = 60.0


class AcceptErrorThrottle(logging.Filter):
    """Lets asyncio's accept-out-of-resources error through once a minute, `suppressed` counting the rest."""

    def __init__(
        self, every_s: float = OUT_OF_RESOURCES_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.every_s = every_s
        self.clock = clock
        self.suppressed = 0
        self._last: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        """False for the accept error while it was let through less than `every_s` ago."""
        if not record.getMessage().startswith(OUT_OF_RESOURCES):
            return True
        now = self.clock()
        if self._last is not None and now - self._last < self.every_s:
            self.suppressed += 1
            return False
        record.suppressed = self.suppressed
        self._last, self.suppressed = now, 0
        return True


def throttle_accept_errors() -> None:
    """Installs AcceptErrorThrottle on asyncio's logger, once."""
    asyncio_log = logging.getLogger("asyncio")
    if not any(isinstance(f, AcceptErrorThrottle) for f in asyncio_log.filters):
        asyncio_log.addFilter(AcceptErrorThrottle())


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
    throttle_accept_errors()
