"""Removes the files of rows cancelled while no replica ran them.

A replica removes what it uploaded when the row it runs ends without completing. A row can
also be cancelled after one replica uploaded its files and before it marked the row
completed, while no replica runs it: that replica was killed, or handed the row back while
the database was away. The cancel marks such a row (the database does, in its trigger),
and every replica sweeps the marked rows: it removes the files at the row's paths (one
that is not there is no error) and clears the mark. Two replicas sweeping the same row
only delete twice.
"""

from __future__ import annotations

import asyncio
import logging

from listener.core.data import ResultPaths
from listener.core.ports import FileLedger, ObjectStore
from listener.errors import ListenerError

log = logging.getLogger(__name__)

# Often enough that a cancelled row's files go within seconds; the look is a read of a
# partial index that is empty almost always.
SWEEP_EVERY_S = 2.0
# Rows handled per look: a look stays short however many were cancelled at once.
ROWS_PER_SWEEP = 20


class CancelledFilesSweep:
    """Removes the files the marked rows may have left in Storage."""

    def __init__(self, ledger: FileLedger, storage: ObjectStore, *, every_s: float = SWEEP_EVERY_S) -> None:
        self.ledger = ledger
        self.storage = storage
        self.every_s = every_s

    async def sweep_once(self) -> int:
        """One look: removes the files of up to ROWS_PER_SWEEP marked rows; returns how many rows."""
        rows = await self.ledger.files_to_remove(ROWS_PER_SWEEP)
        done = []
        for model_id, user_id in rows:
            paths = ResultPaths.of(user_id, model_id)
            try:
                for path in (paths.glb, paths.stl, paths.thumbnail):
                    await self.storage.delete(path)
            except ListenerError as exc:  # Storage away: the mark stays, the next look tries again
                log.warning(
                    "cancelled_files_not_removed", extra={"model_id": str(model_id), "error": str(exc)}
                )
                continue
            done.append(model_id)
        if done:
            await self.ledger.files_removed(done)
            log.info("cancelled_files_removed", extra={"rows": len(done)})
        return len(done)

    async def run(self) -> None:
        """Until cancelled: a look every few seconds."""
        while True:
            try:
                await self.sweep_once()
            except ListenerError as exc:  # the database away: the next look tries again
                log.warning("file_sweep_failed", extra={"error": str(exc)})
            await asyncio.sleep(self.every_s)
