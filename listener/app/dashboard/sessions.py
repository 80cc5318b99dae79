"""The dashboard's server-side secrets: sessions and one-time sign-in links, and wrong guesses."""

from __future__ import annotations

import collections
import hashlib
import math
import secrets
import time
from collections.abc import Callable

Clock = Callable[[], float]
# Wrong tokens an address may send in a window before it is refused until the window ends:
# ten guesses a minute, where an unthrottled port took thousands a second.
MOST_FAILURES = 10
FAILURE_WINDOW_S = 60.0
# Addresses remembered at once; past that the one seen longest ago is forgotten.
MOST_ADDRESSES = 10_000


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class IssuedSecrets:
    """Random secrets this process handed out, each good until it expires or is revoked.

    Only their digests are kept, so a look at the process's memory opens no session.
    """

    def __init__(self, lifetime_s: float, most: int, clock: Clock = time.monotonic) -> None:
        self.lifetime_s = lifetime_s
        self._most = most
        self._clock = clock
        self._expiry: collections.OrderedDict[bytes, float] = collections.OrderedDict()

    def issue(self) -> str:
        """A new secret (256 random bits, URL-safe)."""
        secret = secrets.token_urlsafe(32)
        self._expiry[_digest(secret)] = self._clock() + self.lifetime_s
        while len(self._expiry) > self._most:
            self._expiry.popitem(last=False)  # the oldest
        return secret

    def holds(self, secret: str) -> bool:
        """True while `secret` was issued here, has not expired and was not revoked."""
        key = _digest(secret)
        expiry = self._expiry.get(key)
        if expiry is None:
            return False
        if expiry <= self._clock():
            del self._expiry[key]
            return False
        return True

    def revoke(self, secret: str) -> None:
        """Ends `secret` now."""
        self._expiry.pop(_digest(secret), None)

    def redeem(self, secret: str) -> bool:
        """True once for a secret it holds, which ends with it: a one-time link."""
        held = self.holds(secret)
        self.revoke(secret)
        return held


class FailedAttempts:
    """Wrong tokens per client address over a sliding window."""

    def __init__(
        self,
        most: int = MOST_FAILURES,
        window_s: float = FAILURE_WINDOW_S,
        clock: Clock = time.monotonic,
    ) -> None:
        self._most = most
        self._window_s = window_s
        self._clock = clock
        self._times: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()

    def _recent(self, address: str) -> collections.deque[float]:
        times = self._times.get(address)
        if times is None:
            return collections.deque()
        horizon = self._clock() - self._window_s
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._times[address]
        return times

    def record(self, address: str) -> None:
        """Counts one wrong token from `address`."""
        times = self._recent(address)
        times.append(self._clock())
        self._times[address] = times
        self._times.move_to_end(address)
        while len(self._times) > MOST_ADDRESSES:
            self._times.popitem(last=False)

    def throttled(self, address: str) -> bool:
        """True while `address` has sent its most wrong tokens within the window."""
        return len(self._recent(address)) >= self._most

    def wait_s(self, address: str) -> int:
        """Whole seconds until `address` may try again (0 if it may now)."""
        times = self._recent(address)
        if len(times) < self._most:
            return 0
        return max(1, math.ceil(times[-self._most] + self._window_s - self._clock()))
