"""What the notifier keeps of each push, and the port through which it keeps it."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from listener.notify.texts import Rendered


class PushResult(enum.StrEnum):
    """What became of a row's push, as `listener.jobs.push_result` records it."""

    SENT = "sent"  # at least one device took it
    OFF = "off"  # pushes are off in this deployment (no FCM credentials)
    DISABLED = "disabled"  # the owner turned pushes off in their settings
    NO_TOKENS = "no_tokens"  # the owner has no live device
    CONFIG_ERROR = "config_error"  # FCM refused the project's setup: no retry fixes it
    DEAD_TOKENS = "dead_tokens"  # every device token was dead
    GAVE_UP = "gave_up"  # FCM kept failing for the most attempts
    RETRY = "retry"  # not recorded: the push is handed back to a later sweep


class TokenShape(enum.Enum):
    """The shape of public.user_device_tokens in this database."""

    IS_ACTIVE = "is_active"
    PUSH_ENABLED = "push_enabled"
    UNFLAGGED = "unflagged"  # no flag column: a dead token is deleted
    MISSING = "missing"


@dataclass(frozen=True)
class AppSchema:
    """What the app's schema offers the push, detected once at start."""

    tokens: TokenShape
    has_settings: bool


@dataclass(frozen=True)
class ClaimedPush:
    """A finished row whose push this attempt holds."""

    model_id: uuid.UUID
    user_id: uuid.UUID
    model_name: str
    outcome: str
    error_message: str | None
    attempts: int
    notification_written: bool


class PushLedger(Protocol):
    """Where the notifier records each push, so that it happens once: claims, the
    notification row, tokens and settings (Postgres: adapters/postgres/push_store.py)."""

    async def schema(self) -> AppSchema:
        """Which token table shape, and whether per-user settings exist."""

    async def claim_push(self, model_id: uuid.UUID, claim_id: str, lease_s: float) -> ClaimedPush | None:
        """Takes this row's push, unless it is done or held; None then."""

    async def claim_unsent_pushes(
        self, claim_id: str, lease_s: float, limit: int, max_attempts: int, max_age_s: float
    ) -> list[ClaimedPush]:
        """Takes up to `limit` pushes that no live attempt holds."""

    async def expire(self, max_attempts: int, max_age_s: float) -> int:
        """Ends the pushes tried too often or too old to tell; returns how many."""

    async def write_notification(
        self, push: ClaimedPush, claim_id: str, words: Rendered, metadata: dict[str, Any]
    ) -> bool:
        """Inserts the notification row and sets its marker together; False if not ours to write."""

    async def finish(self, model_id: uuid.UUID, claim_id: str, result: PushResult) -> bool:
        """Ends the push step with `result`; False if the claim was no longer ours."""

    async def extend(self, model_id: uuid.UUID, claim_id: str, lease_s: float) -> bool:
        """Extends the claim of an attempt under way by `lease_s`; False if it is no longer ours."""

    async def release(self, model_id: uuid.UUID, claim_id: str) -> bool:
        """Hands the push back to a later sweep."""

    async def settings(self, user_id: uuid.UUID) -> dict[str, Any] | None:
        """The user's notification settings row, if any, as a dict."""

    async def tokens(self, shape: TokenShape, user_id: uuid.UUID) -> list[str]:
        """The user's live device tokens."""

    async def drop_tokens(self, shape: TokenShape, user_id: uuid.UUID, tokens: Sequence[str]) -> int:
        """Deactivates (or, without a flag column, deletes) dead tokens; returns how many."""
