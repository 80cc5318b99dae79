"""The one retry policy: jittered exponential backoff with a cap and a total deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from listener.errors import TransientError

T = TypeVar("T")


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
        on_retry: Callable[[RetryCallState], Awaitable[None] | None] | None = None,
    ) -> T:
        """Calls `fn`, retrying TransientError; the last error is raised when the policy gives up."""
        if on_retry is None:
            # Most calls succeed at once: that path skips the retry machinery, whose cost
            # adds up over thousands of polls a second.
            try:
                return await fn()
            except TransientError:
                if self.max_attempts <= 1:
                    raise
            return await self._retry(fn, self.max_attempts - 1, wait_first=True)
        return await self._retry(fn, self.max_attempts, on_retry=on_retry)

    async def _retry(
        self,
        fn: Callable[[], Awaitable[T]],
        attempts: int,
        *,
        wait_first: bool = False,
        on_retry: Callable[[RetryCallState], Awaitable[None] | None] | None = None,
    ) -> T:
        wait = wait_random_exponential(multiplier=self.first_wait_s, max=self.max_wait_s)

        async def backoff_after_first_failure(state: RetryCallState) -> None:
            if wait_first and state.attempt_number == 1:
                await asyncio.sleep(wait(state))

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(attempts) | stop_after_delay(self.deadline_s),
            wait=wait,
            before=backoff_after_first_failure,
            before_sleep=on_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await fn()
        raise AssertionError("unreachable: tenacity either returns or raises")
