"""The dashboard's reads: the bounded statements of its queries.sql, shaped as the JSON API answers."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from listener.adapters.postgres.pool import PgPool
from listener.adapters.postgres.queries import blocks
from listener.errors import DatabaseUnavailable

STATUSES = ("pending", "processing", "completed", "failed", "cancelled")
WINDOW_HOURS, MOST_HOURS = 24, 168
PAGE_SIZE, MOST_PAGE_SIZE = 50, 200
# Upper edges of the generation-time histogram's buckets, in seconds.
DURATION_EDGES_S = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
QUEUE_SLICES = 48
REASONS_SHOWN = 8
IN_FLIGHT_SHOWN = 500
READ_TIMEOUT_S = 5.0
CONNECTIONS = 2  # of the listener's pool that the dashboard may hold at once
LIVE_FRESH_S = 1.0  # one snapshot of what moves serves every watcher for this long
SHORT_USER = 8  # characters of a user id shown
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIRST_PAGE = (datetime.max.replace(tzinfo=UTC), uuid.UUID(int=(1 << 128) - 1))
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_HEX = re.compile(rf"[0-9a-f]{{1,{SHORT_USER}}}")  # no more of an id than the page shows


def short_user(user_id: uuid.UUID) -> str:
    """The first characters of a user id: enough to tell users apart and filter by, never the whole id."""
    return str(user_id)[:SHORT_USER]


def masked(text: str | None) -> str | None:
    """`text` with every id in it shortened, so that no full user id reaches the page."""
    if text is None:
        return None
    return _UUID.sub(lambda found: found[0][:SHORT_USER] + "…", text)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def window_hours(query: Mapping[str, str]) -> int:
    """The `hours` of a query string (24 when absent); raises ValueError if not 1 to 168."""
    raw = query.get("hours", str(WINDOW_HOURS))
    if not raw.isdigit() or not 1 <= int(raw) <= MOST_HOURS:
        raise ValueError(f"hours must be a whole number from 1 to {MOST_HOURS}")
    return int(raw)


@dataclass(frozen=True)
class Filters:
    """Which generations a page shows: window, status, user, where the page starts, how many."""

    hours: int = WINDOW_HOURS
    status: str | None = None
    user: str | None = None  # leading hex characters of the user id
    before: tuple[datetime, uuid.UUID] | None = None
    limit: int = PAGE_SIZE

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Filters:
        """The filters of a query string; raises ValueError naming the bad one."""
        status = query.get("status") or None
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        user = (query.get("user") or "").replace("-", "").strip().lower() or None
        if user is not None and not _HEX.fullmatch(user):
            raise ValueError("user must be the first characters (hex) of a user id")
        raw_limit = query.get("limit", str(PAGE_SIZE))
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MOST_PAGE_SIZE:
            raise ValueError(f"limit must be a whole number from 1 to {MOST_PAGE_SIZE}")
        before = parse_cursor(query["before"]) if query.get("before") else None
        return cls(window_hours(query), status, user, before, int(raw_limit))


def cursor(enqueued_at: datetime, model_id: uuid.UUID) -> str:
    """Where the next page starts: after this row (its request time in microseconds, and its id)."""
    return f"{(enqueued_at - _EPOCH) // timedelta(microseconds=1)}.{model_id.hex}"


def parse_cursor(text: str) -> tuple[datetime, uuid.UUID]:
    """The row a `cursor` names; raises ValueError for anything else."""
    micros, _, model_id = text.partition(".")
    try:
        return _EPOCH + timedelta(microseconds=int(micros)), uuid.UUID(hex=model_id)
    except (ValueError, OverflowError) as exc:
        raise ValueError("before must be the `next` of a page") from exc


def user_range(prefix: str) -> tuple[uuid.UUID, uuid.UUID]:
    """The lowest and highest user ids that start with `prefix`."""
    return uuid.UUID(hex=prefix.ljust(32, "0")), uuid.UUID(hex=prefix.ljust(32, "f"))


def _row(r: asyncpg.Record) -> dict[str, Any]:
    """A generation as the list shows it."""
    return {
        "id": str(r["model_id"]),
        "model_name": masked(r["model_name"]),
        "user": short_user(r["user_id"]),
        "kind": r["kind"],
        "status": r["status"],
        "progress": r["progress"],
        "attempts": r["attempts"],
        "requested_at": _iso(r["enqueued_at"]),
        "claimed_at": _iso(r["claimed_at"]),
        "finished_at": _iso(r["finished_at"]),
        "waiting_s": _seconds(r["waiting_s"]),
        "running_s": _seconds(r["running_s"]),
        "reason": masked(r["reason"]),
    }


def _file(model_id: str, kind: str, path: str | None, url: str | None) -> dict[str, Any] | None:
    if not path and not url:
        return None
    opens = f"/api/generations/{model_id}/files/{kind}" if url else None
    return {"path": masked(path) or None, "url": masked(url), "open": opens}


def _details(r: asyncpg.Record) -> dict[str, Any]:
    """A generation with everything its details panel shows."""
    row = _row(r)
    model_id = row["id"]
    return row | {
        "task_id": r["task_id"],
        "prompt": masked(r["prompt"]),
        "source_image": masked(r["source_image"]),
        "poll_failures": r["poll_failures"],
        "owner_retries": r["owner_retries"],
        "lease_owner": r["lease_owner"],
        "lease_left_s": _seconds(r["lease_left_s"]),
        "created_at": _iso(r["created_at"]),
        "submitted_at": _iso(r["submitted_at"]),
        "completed_at": _iso(r["completed_at"]),
        "file_size": r["file_size"],
        "files": {
            "glb": _file(model_id, "glb", r["storage_path"], r["download_url"]),
            "stl": _file(model_id, "stl", r["stl_storage_path"], r["stl_download_url"]),
            "thumbnail": _file(model_id, "thumbnail", None, r["thumbnail_url"]),
        },
    }


FILE_COLUMNS = {"glb": "download_url", "stl": "stl_download_url", "thumbnail": "thumbnail_url"}


class DashboardReads:
    """The dashboard's reads on the listener's pool: a few connections at most, each read timed."""

    def __init__(self, pg_of: Callable[[], PgPool | None], *, owner: str, lease_s: float) -> None:
        self._pg_of = pg_of
        self.owner = owner
        self.lease_s = lease_s
        self._slots = asyncio.Semaphore(CONNECTIONS)
        self._live_lock = asyncio.Lock()
        self._live: tuple[float, dict[str, Any]] | None = None

    async def _read(self, name: str, *args: object) -> list[asyncpg.Record]:
        pg = self._pg_of()
        if pg is None:
            raise DatabaseUnavailable("starting: waiting for the database")
        statement = blocks("listener.app.dashboard", "queries.sql")[name]
        try:
            # The statement is cut off after READ_TIMEOUT_S; the wait for a connection counts too.
            async with asyncio.timeout(2 * READ_TIMEOUT_S), self._slots:
                return await pg.fetch_block(statement, *args, limit_s=READ_TIMEOUT_S)
        except TimeoutError as exc:
            raise DatabaseUnavailable(f"the dashboard's read {name} took too long") from exc

    async def generations(self, f: Filters) -> dict[str, Any]:
        """A page of the window's generations, newest request first, and where the next page starts."""
        at, after = f.before or _FIRST_PAGE
        args = (f.hours, at, after, f.status, f.limit + 1)
        if f.user is None:
            rows = await self._read("generations", *args)
        else:
            rows = await self._read("generations_of_user", *args, *user_range(f.user))
        page = rows[: f.limit]
        more = len(rows) > f.limit
        return {
            "window_hours": f.hours,
            "generations": [_row(r) for r in page],
            "next": cursor(page[-1]["enqueued_at"], page[-1]["model_id"]) if more else None,
        }

    async def generation(self, model_id: uuid.UUID) -> dict[str, Any] | None:
        """One generation's details, or None if the listener has no such row."""
        rows = await self._read("generation", model_id)
        return _details(rows[0]) if rows else None

    async def file_url(self, model_id: uuid.UUID, kind: str) -> str | None:
        """The public URL of one result file (`glb`, `stl`, `thumbnail`), or None."""
        rows = await self._read("generation", model_id)
        url = rows[0][FILE_COLUMNS[kind]] if rows else None
        return url if isinstance(url, str) and url.startswith(("https://", "http://")) else None

    async def charts(self, hours: int) -> dict[str, Any]:
        """The window's totals, ends per hour, generation times, failure reasons and queue depth."""
        (markers,) = await self._read("live_markers")
        totals = await self._read("totals", hours)
        per_hour = await self._read("per_hour", hours)
        durations = await self._read("durations", hours, list(DURATION_EDGES_S))
        reasons = await self._read("failure_reasons", hours, REASONS_SHOWN)
        queue = await self._read("queue_depth", hours, QUEUE_SLICES)
        first = durations[0]
        return {
            "window_hours": hours,
            "now": _iso(markers["now"]),
            "totals": dict.fromkeys(STATUSES, 0) | {r["status"]: r["n"] for r in totals},
            "per_hour": [
                {"hour": _iso(r["hour"]), "completed": r["completed"], "failed": r["failed"]}
                for r in per_hour
            ],
            "durations": {
                "edges_s": list(DURATION_EDGES_S),
                "buckets": [
                    {"bucket": r["bucket"], "count": r["n"]} for r in durations if r["bucket"] is not None
                ],
                "count": first["total"],
                "p50_s": _seconds(first["p50"]),
                "p95_s": _seconds(first["p95"]),
            },
            "failures": [{"reason": masked(r["reason"]), "count": r["n"]} for r in reasons],
            "queue": {
                "slices": QUEUE_SLICES,
                "slice_s": hours * 3600 / QUEUE_SLICES,
                "depth": [{"slice": r["slice"], "most": r["most"], "last": r["last"]} for r in queue],
            },
        }

    async def replicas(self) -> dict[str, Any]:
        """Each replica holding leases: rows in flight, its last lease renewal, leases run out."""
        rows = await self._read("replicas", self.lease_s)
        (listening,) = await self._read("listening_replicas")
        replicas = [
            {
                "name": r["owner"],
                "this": r["owner"] == self.owner,
                "in_flight": r["in_flight"],
                "expired": r["expired"],
                "renewed_s_ago": _seconds(r["renewed_s_ago"]),
                "next_expiry_s": _seconds(r["next_expiry_s"]),
            }
            for r in rows
        ]
        if not any(r["this"] for r in replicas):  # this replica, idle: it holds no lease
            idle = {"in_flight": 0, "expired": 0, "renewed_s_ago": None, "next_expiry_s": None}
            replicas.insert(0, {"name": self.owner, "this": True} | idle)
        return {"connected": listening["n"], "lease_s": self.lease_s, "replicas": replicas}

    async def live(self) -> dict[str, Any]:
        """What moves: the newest request and end, and the rows in flight; one read a second at most."""
        async with self._live_lock:
            now = time.monotonic()
            if self._live is not None and now - self._live[0] < LIVE_FRESH_S:
                return self._live[1]
            (markers,) = await self._read("live_markers")
            rows = await self._read("live_in_flight", IN_FLIGHT_SHOWN)
            snapshot = {
                "now": _iso(markers["now"]),
                "newest_request": _iso(markers["newest_request"]),
                "newest_end": _iso(markers["newest_end"]),
                "in_flight": [
                    {
                        "id": str(r["model_id"]),
                        "status": r["status"],
                        "progress": r["progress"],
                        "running_s": _seconds(r["running_s"]),
                    }
                    for r in rows
                ],
            }
            self._live = (now, snapshot)
            return snapshot
