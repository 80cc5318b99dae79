"""The replica's Storage check: at start, every few minutes while Storage works, every 30 s while not,
and at once when a row's upload finds Storage refusing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from listener.adapters.postgres.pool import PgPool
from listener.adapters.storage.s3 import Storage
from listener.core.storage_state import BucketLimits, StorageState
from listener.errors import DatabaseUnavailable
from listener.metrics import Metrics

log = logging.getLogger(__name__)

CHECK_WHILE_WORKING_S = 300.0
CHECK_WHILE_BROKEN_S = 30.0


class StorageWatch:
    """Keeps a StorageState up to date: the bucket reachable with the keys, and its own limits."""

    def __init__(
        self,
        storage: Storage,
        pg: PgPool,
        bucket: str,
        state: StorageState,
        metrics: Metrics,
        *,
        recheck_s: float = CHECK_WHILE_BROKEN_S,
    ) -> None:
        self.storage = storage
        self.pg = pg
        self.bucket = bucket
        self.state = state
        self.metrics = metrics
        self.recheck_s = recheck_s
        # A row refused for the bucket's limits reads them anew through this check.
        state.read_limits = self.read_limits

    async def run(self) -> None:
        """Checks until cancelled."""
        while True:
            checked_at = time.monotonic()
            try:
                await self.check_once()
            except Exception:  # the check must outlive anything it meets
                log.exception("storage_check_failed")
            if self.state.usable:
                # Every few minutes, or when a row's upload finds Storage refusing: then at once,
                # but never sooner than `recheck_s` after the last check, so that a row and the
                # check that disagree (the bucket answers, the upload is refused) cannot spin.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.state.wait_unusable(), timeout=CHECK_WHILE_WORKING_S)
                await asyncio.sleep(max(0.0, checked_at + self.recheck_s - time.monotonic()))
            else:
                await asyncio.sleep(self.recheck_s)

    async def check_once(self) -> None:
        """One check; logs each change between usable and not."""
        found = await self.storage.check()
        code, problem = found if found is not None else (None, None)
        if self.state.update(problem, await self.read_limits()):
            if problem is None:
                log.info("storage_usable", extra={"bucket": self.bucket})
            else:
                log.error("storage_unusable", extra={"bucket": self.bucket, "problem": problem})
        self.metrics.storage_usable.set(1 if problem is None else 0)
        for reason in self.metrics.STORAGE_PROBLEMS:
            self.metrics.storage_problem.labels(reason).set(1 if reason == code else 0)

    async def read_limits(self) -> BucketLimits | None:
        """The bucket's own limits from Supabase's storage.buckets; None where unknown."""
        try:
            if not await self.pg.fetchval("storage_buckets_exist"):
                return BucketLimits()
            row = await self.pg.fetchrow("storage_bucket_limits", self.bucket)
        except DatabaseUnavailable:
            return None  # keep what was known
        if row is None:
            return BucketLimits()
        types = row["allowed_mime_types"]
        return BucketLimits(row["file_size_limit"], frozenset(types) if types else None)
