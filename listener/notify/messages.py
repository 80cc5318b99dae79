"""Push messages and what became of them: plain data, shared by the notifier and the FCM sender."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


class SendOutcome(enum.Enum):
    """What became of one message."""

    DELIVERED = "delivered"
    DEAD_TOKEN = "dead_token"  # deactivate the token
    RETRYABLE = "retryable"  # try again later with backoff
    CONFIG_ERROR = "config_error"  # credentials, sender or payload: no retry fixes it


@dataclass(frozen=True)
class PushMessage:
    """One notification to one device token."""

    token: str
    title: str
    body: str
    data: Mapping[str, str]
    # Same id, same notification on the device: a repeat replaces instead of adding one.
    collapse_id: str


@dataclass(frozen=True)
class SendResult:
    """The outcome of one message, with FCM's error code and message when it failed."""

    token: str
    outcome: SendOutcome
    code: str | None = None
    detail: str | None = None


class PushSender(Protocol):
    """What sends pushes: listener.adapters.fcm.FcmSender, or a fake in tests."""

    async def send(self, messages: Sequence[PushMessage]) -> list[SendResult]:
        """One result per message, in order; never raises but for cancellation."""


@dataclass(frozen=True)
class ProgressMessage:
    """One lock-screen update to one device: an Android data message, or an iOS Live Activity update.

    Android gets `data` (strings, rendered by the app); an iPhone gets `content_state` (the
    app's ActivityKit ContentState) for its Live Activity, named by `live_activity_token`.
    """

    token: str  # the device's FCM registration token
    collapse_id: str  # the row's id: a newer update replaces an older one still on its way
    data: Mapping[str, str]
    content_state: Mapping[str, str | int]
    # Unix seconds: Apple shows an update only if it is newer than the one shown.
    timestamp: int
    ends: bool  # the row ended: the Live Activity ends, and the update is urgent
    live_activity_token: str | None = None

    @property
    def is_live_activity(self) -> bool:
        """True for an iOS Live Activity update, False for an Android data message."""
        return self.live_activity_token is not None


class ProgressSender(Protocol):
    """What sends lock-screen updates: listener.adapters.fcm.FcmSender, or a fake in tests."""

    async def send_progress(self, messages: Sequence[ProgressMessage]) -> list[SendResult]:
        """One result per message, in order; never raises but for cancellation."""
