"""The one retry policy: jittered exponential backoff with a cap and a total deadline.

Every retry is logged as `retry_scheduled` (attempt, wait_s, error), so a call that keeps
failing is visible before it gives up.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from listener.errors import TransientError

T = TypeVar("T")
OnRetry = Callable[[RetryCallState], Awaitable[None] | None]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures of an outside call are retried."""

    first_wait_s: float = 0.5
    max_wait_s: float = 30.0
    deadline_s: float = 300.0
    max_attempts: int = 8

    def scaled(self, factor: float) -> RetryPolicy:
        """The same policy with every wait multiplied by `factor` (0 in tests: no waiting)."""
        return RetryPolicy(
            self.first_wait_s * factor, self.max_wait_s * factor, self.deadline_s, self.max_attempts
        )

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        on_retry: OnRetry | None = None,
        give_up_on: tuple[type[TransientError], ...] = (),
    ) -> T:
        """Calls `fn`, retrying TransientError; the last error is raised when the policy gives up.

        `on_retry` hears each failure that is retried, after it is logged; an error of a type
        in `give_up_on` is raised at once, though transient.
        """
        # Most calls succeed at once: that path skips the retry machinery, whose cost
        # adds up over thousands of polls a second.
        try:
            return await fn()
        except TransientError as exc:
            if self.max_attempts <= 1 or isinstance(exc, give_up_on):
                raise
            first_failure: list[TransientError] = [exc]

        async def replay_first_failure_then_call() -> T:
            # Tenacity's first attempt is the call that already failed: it counts and waits
            # like any other, without calling `fn` twice.
            if first_failure:
                raise first_failure.pop()
            return await fn()

        async def before_sleep(state: RetryCallState) -> None:
            await _scheduled(state, on_retry)

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientError) & retry_if_not_exception_type(give_up_on),
            stop=stop_after_attempt(self.max_attempts) | stop_after_delay(self.deadline_s),
            wait=wait_random_exponential(multiplier=self.first_wait_s, max=self.max_wait_s),
            before_sleep=before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await replay_first_failure_then_call()
        raise AssertionError("unreachable: tenacity either returns or raises")


async def _scheduled(state: RetryCallState, on_retry: OnRetry | None) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    log.warning(
        "retry_scheduled",
        extra={
            "attempt": state.attempt_number,
            "wait_s": round(state.upcoming_sleep, 3),
            "error": f"{type(error).__name__}: {error}",
        },
    )
    if on_retry is not None:
        result = on_retry(state)
        if result is not None:
            await result
