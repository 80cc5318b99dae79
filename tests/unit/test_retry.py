"""The retry policy: what is retried, how often, and what is raised in the end."""

from __future__ import annotations

import logging

import pytest
from tenacity import RetryCallState

from listener.errors import DatabaseUnavailable, PermanentError, TransientError
from listener.retry import RetryPolicy

NO_WAIT = RetryPolicy(max_attempts=4).scaled(0)


def failing(times: int, error: Exception) -> tuple[list[int], object]:
    calls: list[int] = []

    async def fn() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return "ok"

    return calls, fn


async def test_a_call_that_succeeds_is_made_once() -> None:
    calls, fn = failing(0, TransientError("x"))
    assert await NO_WAIT.call(fn) == "ok"  # type: ignore[arg-type]
    assert len(calls) == 1


async def test_transient_errors_are_retried_until_success() -> None:
    calls, fn = failing(3, TransientError("x"))
    assert await NO_WAIT.call(fn) == "ok"  # type: ignore[arg-type]
    assert len(calls) == 4


async def test_the_last_transient_error_is_raised_after_max_attempts() -> None:
    calls, fn = failing(10, TransientError("still down"))
    with pytest.raises(TransientError, match="still down"):
        await NO_WAIT.call(fn)  # type: ignore[arg-type]
    assert len(calls) == 4


async def test_permanent_errors_are_not_retried() -> None:
    calls, fn = failing(10, PermanentError("no"))
    with pytest.raises(PermanentError):
        await NO_WAIT.call(fn)  # type: ignore[arg-type]
    assert len(calls) == 1


async def test_on_retry_hears_every_failure_that_is_retried() -> None:
    heard: list[int] = []
    calls, fn = failing(2, TransientError("x"))

    def on_retry(state: RetryCallState) -> None:
        heard.append(state.attempt_number)

    assert await NO_WAIT.call(fn, on_retry=on_retry) == "ok"  # type: ignore[arg-type]
    assert (len(calls), heard) == (3, [1, 2])


async def test_a_single_attempt_policy_raises_at_once() -> None:
    calls, fn = failing(1, TransientError("x"))
    with pytest.raises(TransientError):
        await RetryPolicy(max_attempts=1).scaled(0).call(fn)  # type: ignore[arg-type]
    assert len(calls) == 1


async def test_a_transient_error_named_in_give_up_on_is_raised_at_once() -> None:
    calls, fn = failing(10, DatabaseUnavailable("gone"))
    with pytest.raises(DatabaseUnavailable):
        await NO_WAIT.call(fn, give_up_on=(DatabaseUnavailable,))  # type: ignore[arg-type]
    assert len(calls) == 1
    calls, fn = failing(1, TransientError("x"))
    assert await NO_WAIT.call(fn, give_up_on=(DatabaseUnavailable,)) == "ok"  # type: ignore[arg-type]
    assert len(calls) == 2


async def test_every_retry_is_logged_as_retry_scheduled(caplog: pytest.LogCaptureFixture) -> None:
    _, fn = failing(2, TransientError("still down"))
    with caplog.at_level(logging.WARNING, logger="listener.retry"):
        assert await NO_WAIT.call(fn) == "ok"  # type: ignore[arg-type]
    scheduled = [r for r in caplog.records if r.getMessage() == "retry_scheduled"]
    assert [(r.attempt, r.error) for r in scheduled] == [  # type: ignore[attr-defined]
        (1, "TransientError: still down"),
        (2, "TransientError: still down"),
    ]
