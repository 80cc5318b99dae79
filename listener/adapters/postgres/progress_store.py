"""The statements of lock-screen progress (notify's ProgressLedger): where each row's updates go."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from listener.adapters.postgres.pool import PgPool
from listener.adapters.postgres.push_store import PushStore
from listener.notify.ledger import TokenShape
from listener.notify.progress_pushes import LiveActivity, ProgressTargets


class ProgressStore:
    """Where a row's Live Activity and its owner's opted-in Android tokens are found, and dropped."""

    def __init__(self, pg: PgPool) -> None:
        self.pg = pg
        # Dead Android tokens are dropped exactly as the completion push drops them.
        self._push = PushStore(pg)
        self._shape: TokenShape | None = None

    async def targets(self, model_id: uuid.UUID, user_id: uuid.UUID) -> ProgressTargets:
        """The row's Live Activity and its owner's opted-in Android tokens."""
        row = await self.pg.fetchrow("progress_targets", model_id, user_id)
        assert row is not None
        activity = None
        if row["activity_token"] is not None:
            activity = LiveActivity(row["activity_token"], row["activity_device_token"])
        return ProgressTargets(list(row["android"]), activity)

    async def is_cancelled(self, model_id: uuid.UUID) -> bool:
        """True when the row's status is `cancelled`."""
        return bool(await self.pg.fetchval("progress_row_cancelled", model_id))

    async def drop_dead(
        self, model_id: uuid.UUID, user_id: uuid.UUID, android: Sequence[str], live_activity: bool
    ) -> None:
        """Drops what FCM called dead: Android tokens as the completion push does, the row's Live Activity."""
        if android:
            if self._shape is None:
                self._shape = (await self._push.schema()).tokens
            await self._push.drop_tokens(self._shape, user_id, android)
        if live_activity:
            await self.pg.fetch("progress_drop_live_activity", model_id)
