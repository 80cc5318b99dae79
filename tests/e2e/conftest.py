"""End-to-end tests: every log line they produce is scanned for secrets."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from listener.logs import JsonFormatter
from tests.support.stack import SECRETS


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(autouse=True)
def no_secret_in_logs(tmp_path: Path) -> Iterator[None]:
    """Fails the test if a password or key appears in any log line of the listener it ran."""
    handler = _Collect()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    lines = handler.lines + [
        line for log in tmp_path.glob("*.log") for line in log.read_text(errors="replace").splitlines()
    ]
    assert lines, "the test produced no log line to scan"
    leaks = [line for line in lines if any(secret in line for secret in SECRETS)]
    assert not leaks, leaks[:3]
