"""The job store on PgPool: claims, leases and the writes of a row's life; every query from queries.sql."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from listener.adapters.postgres.pool import PgPool
from listener.core.data import ClaimedJob, CompletedColumns, ExpiredLeases, FinishedRow


def _finished(row: asyncpg.Record | None) -> FinishedRow | None:
    if row is None:
        return None
    return FinishedRow(row["id"], row["user_id"], row["model_name"], row["status"], row["error_message"])


class PgJobStore:
    """The job store: claims, leases and the writes of a row's life (the core's JobStore and LeaseStore)."""

    def __init__(self, pg: PgPool) -> None:
        self.pg = pg

    @classmethod
    @asynccontextmanager
    async def connect(cls, database_url: str, *, max_size: int = 10) -> AsyncIterator[PgJobStore]:
        """A job store on a pool of its own, for the duration of the block."""
        async with PgPool.connect(database_url, max_size=max_size) as pg:
            yield cls(pg)

    async def _updated(self, name: str, *args: object) -> bool:
        return await self.pg.fetchrow(name, *args) is not None

    async def release_expired_leases(self) -> ExpiredLeases:
        """Hands back the jobs whose lease ran out, so that they can be claimed."""
        row = await self.pg.fetchrow("release_expired_leases")
        assert row is not None
        return ExpiredLeases(row["released"], row["next_expiry_s"])

    async def forget_old_requests(self, days_kept: int, most: int) -> int:
        """Prunes up to `most` requests older than `days_kept` from the daily budget's memory."""
        row = await self.pg.fetchrow("forget_old_requests", days_kept, most)
        assert row is not None
        return int(row[0])

    async def files_to_remove(self, most: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """Up to `most` rows cancelled after their model was asked for: (model id, user id)."""
        return [(row["model_id"], row["user_id"]) for row in await self.pg.fetch("files_to_remove", most)]

    async def files_removed(self, model_ids: Sequence[uuid.UUID]) -> None:
        """Their files are gone: the rows are done with."""
        await self.pg.execute("files_removed", list(model_ids))

    async def give_up_jobs(self, max_claims: int) -> list[FinishedRow]:
        """Fails the jobs claimed `max_claims` times without finishing; returns their rows."""
        rows = await self.pg.fetch("give_up_jobs", max_claims)
        return [model for model in map(_finished, rows) if model is not None]

    async def claim(
        self, owner: str, slots: int, per_user_limit: int, lease_s: float, max_claims: int
    ) -> list[ClaimedJob]:
        """Leases up to `slots` claimable jobs to `owner`, fairly, in one transaction."""

        rows = await self.pg.fetch("claim_jobs", owner, slots, per_user_limit, lease_s, max_claims)
        return [
            ClaimedJob(
                model_id=r["model_id"],
                user_id=r["user_id"],
                generation_type=r["generation_type"],
                prompt=r["prompt"],
                source_image_url=r["source_image_url"],
                art_style=r["art_style"],
                symmetry_mode=r["symmetry_mode"],
                target_polycount=float(r["target_polycount"]) if r["target_polycount"] is not None else None,
                model_name=r["model_name"],
                progress=r["progress"],
                ai_task_id=r["ai_task_id"],
                attempts=r["attempts"],
                poll_failures=r["poll_failures"],
                submitted_age_s=r["submitted_age_s"],
                queued_s=r["queued_s"],
            )
            for r in rows
        ]

    async def renew_leases(
        self, owner: str, model_ids: Sequence[uuid.UUID], lease_s: float
    ) -> set[uuid.UUID]:
        """Extends the leases still ours; returns their ids."""
        if not model_ids:
            return set()
        rows = await self.pg.fetch("renew_leases", owner, list(model_ids), lease_s)
        return {r["model_id"] for r in rows}

    async def release_leases(self, owner: str) -> int:
        """Hands every unfinished job of `owner` back; returns how many."""
        rows = await self.pg.fetch("release_leases", owner)
        return len(rows)

    async def release_lease(self, model_id: uuid.UUID, owner: str) -> None:
        """Hands one job back so that a replica can take it up again."""
        await self.pg.execute("release_lease", model_id, owner)

    async def abandoned(self, model_id: uuid.UUID) -> bool:
        """True when no replica will complete the row: its job was cancelled, failed or deleted."""
        return bool(await self.pg.fetchval("job_abandoned", model_id))

    async def record_task_id(self, model_id: uuid.UUID, owner: str, task_id: str) -> bool:
        """Stores the AI task id before the first poll; False if the job is no longer ours.

        The id is stored for the replica that took the job over, too, if it has none yet.
        """
        return bool(await self.pg.fetchval("record_task_id", model_id, owner, task_id))

    async def record_poll_failures(self, model_id: uuid.UUID, owner: str, failures: int) -> bool:
        """Stores the count of failed polls in a row; False if the job is no longer ours."""
        return await self._updated("record_poll_failures", model_id, owner, failures)

    async def write_progress(self, model_id: uuid.UUID, owner: str, progress: int) -> bool:
        """Raises the row's progress; False if it was not raised (not ours, or not higher)."""
        return await self._updated("write_progress", model_id, owner, progress)

    async def complete(
        self, model_id: uuid.UUID, owner: str, results: CompletedColumns
    ) -> FinishedRow | None:
        """Marks the row completed and ends its job in one statement; None if no longer ours."""
        row = await self.pg.fetchrow(
            "complete_job",
            model_id,
            owner,
            results.storage_path,
            results.download_url,
            results.file_size,
            results.stl_storage_path,
            results.stl_download_url,
            results.thumbnail_url,
            json.dumps(results.model_dimensions) if results.model_dimensions is not None else None,
            json.dumps(results.generation_metadata),
        )
        return _finished(row)

    async def fail(
        self, model_id: uuid.UUID, owner: str, reason: str, metadata: dict[str, Any]
    ) -> FinishedRow | None:
        """Marks the row failed with `reason` and ends its job; None if no longer ours."""
        return _finished(await self.pg.fetchrow("fail_job", model_id, owner, reason, json.dumps(metadata)))
