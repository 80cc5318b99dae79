"""The push's statements: claims, the notification row with its marker, tokens, settings."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from listener.adapters.postgres.pool import PgPool
from listener.notify.ledger import AppSchema, ClaimedPush, PushResult, TokenShape
from listener.notify.texts import Rendered

_TOKENS = {
    TokenShape.IS_ACTIVE: ("push_tokens_is_active", "push_deactivate_is_active"),
    TokenShape.PUSH_ENABLED: ("push_tokens_push_enabled", "push_deactivate_push_enabled"),
    TokenShape.UNFLAGGED: ("push_tokens_unflagged", "push_delete_tokens"),
}


def _claimed(row: asyncpg.Record) -> ClaimedPush:
    return ClaimedPush(
        row["model_id"],
        row["user_id"],
        row["model_name"],
        row["outcome"],
        row["error_message"],
        row["push_attempts"],
        row["notification_written"],
    )


class PushStore:
    """The push's statements, run through the listener's Postgres pool (a notify.ledger.PushLedger)."""

    def __init__(self, pg: PgPool) -> None:
        self.pg = pg

    async def schema(self) -> AppSchema:
        """Which token table shape, and whether per-user settings exist."""
        row = await self.pg.fetchrow("push_schema")
        assert row is not None
        if not row["has_tokens"]:
            shape = TokenShape.MISSING
        elif row["has_is_active"]:
            shape = TokenShape.IS_ACTIVE
        elif row["has_push_enabled"]:
            shape = TokenShape.PUSH_ENABLED
        else:
            shape = TokenShape.UNFLAGGED
        return AppSchema(shape, bool(row["has_settings"]))

    async def claim_push(self, model_id: uuid.UUID, claim_id: str, lease_s: float) -> ClaimedPush | None:
        """Takes this row's push, unless it is done or held; None then."""
        row = await self.pg.fetchrow("push_claim", model_id, claim_id, lease_s)
        return _claimed(row) if row is not None else None

    async def claim_unsent_pushes(
        self, claim_id: str, lease_s: float, limit: int, max_attempts: int, max_age_s: float
    ) -> list[ClaimedPush]:
        """Takes up to `limit` pushes that no live attempt holds."""
        rows = await self.pg.fetch("push_claim_unsent", claim_id, lease_s, limit, max_attempts, max_age_s)
        return [_claimed(r) for r in rows]

    async def expire(self, max_attempts: int, max_age_s: float) -> int:
        """Ends the pushes tried too often or too old to tell; returns how many."""
        return len(await self.pg.fetch("push_expire", max_attempts, max_age_s))

    async def write_notification(
        self, push: ClaimedPush, claim_id: str, words: Rendered, metadata: dict[str, Any]
    ) -> bool:
        """Inserts the notification row and sets its marker together; False if not ours to write."""
        row = await self.pg.fetchrow(
            "push_write_notification",
            push.model_id,
            claim_id,
            push.user_id,
            words.title,
            words.message,
            words.message_en,
            words.type,
            json.dumps(metadata, ensure_ascii=False),
        )
        return row is not None

    async def finish(self, model_id: uuid.UUID, claim_id: str, result: PushResult) -> bool:
        """Ends the push step with `result`; False if the claim was no longer ours."""
        return await self.pg.fetchrow("push_done", model_id, claim_id, result.value) is not None

    async def extend(self, model_id: uuid.UUID, claim_id: str, lease_s: float) -> bool:
        """Extends the claim of an attempt under way by `lease_s`; False if it is no longer ours."""
        return await self.pg.fetchrow("push_extend", model_id, claim_id, lease_s) is not None

    async def release(self, model_id: uuid.UUID, claim_id: str) -> bool:
        """Hands the push back to a later sweep."""
        return await self.pg.fetchrow("push_release", model_id, claim_id) is not None

    async def settings(self, user_id: uuid.UUID) -> dict[str, Any] | None:
        """The user's notification settings row, if any, as a dict."""
        row = await self.pg.fetchrow("push_settings", user_id)
        if row is None:
            return None
        settings: dict[str, Any] = json.loads(row["settings"])
        return settings

    async def tokens(self, shape: TokenShape, user_id: uuid.UUID) -> list[str]:
        """The user's live device tokens."""
        rows = await self.pg.fetch(_TOKENS[shape][0], user_id)
        return [r["device_token"] for r in rows]

    async def drop_tokens(self, shape: TokenShape, user_id: uuid.UUID, tokens: Sequence[str]) -> int:
        """Deactivates (or, without a flag column, deletes) dead tokens; returns how many."""
        return len(await self.pg.fetch(_TOKENS[shape][1], user_id, list(tokens)))
