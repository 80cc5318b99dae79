"""The health port's limits taken from the descriptor limit, and the accept error's log throttle."""

from __future__ import annotations

import logging

import pytest

from listener.app.http_guard import BACKLOG, MAX_CONNECTIONS, MIN_CONNECTIONS, connection_cap
from listener.logs import OUT_OF_RESOURCES, AcceptErrorThrottle


@pytest.mark.parametrize("descriptors", [64, 1024, 4096, 65536, 1 << 20])
def test_the_connection_cap_leaves_the_rest_of_the_listener_half_the_descriptors(descriptors: int) -> None:
    cap = connection_cap(descriptors)
    assert MIN_CONNECTIONS <= cap <= MAX_CONNECTIONS
    if descriptors >= 2 * (MIN_CONNECTIONS + 2 * BACKLOG):
        # Open connections, a turn's accepted sockets and a turn's closing ones fit in half.
        assert cap + 2 * BACKLOG <= descriptors // 2


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, message, None, None)


def test_the_accept_error_passes_once_a_minute_with_a_count_of_the_rest() -> None:
    now = [1000.0]
    throttle = AcceptErrorThrottle(clock=lambda: now[0])
    first = _record(f"{OUT_OF_RESOURCES}\nsocket: <fd=6>")
    passed = [throttle.filter(first)]
    for _ in range(59):  # asyncio retries once a second
        now[0] += 1.0
        passed.append(throttle.filter(_record(f"{OUT_OF_RESOURCES}\nsocket: <fd=6>")))
    now[0] += 1.0
    after_a_minute = _record(f"{OUT_OF_RESOURCES}\nsocket: <fd=6>")
    passed.append(throttle.filter(after_a_minute))
    assert passed == [True] + [False] * 59 + [True]
    assert getattr(first, "suppressed", None) == 0
    assert getattr(after_a_minute, "suppressed", None) == 59


def test_other_asyncio_errors_pass_untouched() -> None:
    throttle = AcceptErrorThrottle(clock=lambda: 0.0)
    throttle.filter(_record(OUT_OF_RESOURCES))
    other = _record("Task exception was never retrieved")
    assert throttle.filter(other) and throttle.filter(other)
    assert not hasattr(other, "suppressed")
