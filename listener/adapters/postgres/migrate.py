"""Applies the numbered migrations of `sql/` in order, once each, under an advisory lock."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from listener.adapters.postgres.queries import query
from listener.errors import MigrationBlocked, MigrationRefused

log = logging.getLogger(__name__)

# How long one migration waits for a lock before it lets the app's queries through and
# tries again; and how many times it tries.
LOCK_TIMEOUT_S = 3.0
LOCK_ATTEMPTS = 5
BACKOFF_MAX_S = 8.0
_PREVIOUSLY = re.compile(r"^-- previously: ([0-9a-f]{64})$", re.MULTILINE)


@dataclass(frozen=True)
class Migration:
    """One file of `sql/`: its version (the file name without `.sql`) and its text."""

    version: str
    sql: str

    @property
    def checksum(self) -> str:
        """A digest of the text, to notice a migration edited after it was applied."""
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def known_checksums(self) -> frozenset[str]:
        """This text's digest and those of earlier texts with the same effect (`-- previously: <sha256>`)."""
        return frozenset({self.checksum, *_PREVIOUSLY.findall(self.sql)})


def migrations_dir() -> Path:
    """Where the migrations are: inside the installed package, or at the top of a checkout."""
    package = Path(__file__).resolve().parents[2]  # listener/, from listener/adapters/postgres/
    for candidate in (package / "sql", package.parent / "sql"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("the sql/ migrations are missing from this installation")


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """Every `NNNN_name.sql` file, in order."""
    directory = directory or migrations_dir()
    return [
        Migration(path.stem, path.read_text(encoding="utf-8"))
        for path in sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    ]


async def migrate(
    conn: asyncpg.Connection,
    *,
    migrations: list[Migration] | None = None,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
    attempts: int = LOCK_ATTEMPTS,
) -> list[str]:
    """Applies what is not applied yet; returns the versions it applied (none the second time).

    Each migration waits at most `lock_timeout_s` for the locks it needs, so that the app's
    queries never queue long behind it; it is tried again with backoff, `attempts` times in
    all, then MigrationBlocked names the sessions in the way.
    """
    applied_now: list[str] = []
    await conn.execute(query("migrations_lock"))
    try:
        applied = await _applied(conn)
        todo = []
        for migration in load_migrations() if migrations is None else migrations:
            if migration.version not in applied:
                todo.append(migration)
            elif applied[migration.version] not in migration.known_checksums:
                log.warning("migration_changed_after_apply", extra={"version": migration.version})
        reason = await conn.fetchval(query("migrations_preflight")) if todo else None
        if reason:
            raise MigrationRefused(
                f"{reason}; nothing was changed. Run migrate as the owner of the app's tables "
                "(on Supabase, the postgres role)."
            )
        if todo:
            await conn.execute(query("migrations_bootstrap"))
        for migration in todo:
            await _apply(conn, migration, lock_timeout_s, attempts)
            log.info("migration_applied", extra={"version": migration.version})
            applied_now.append(migration.version)
    finally:
        await conn.execute(query("migrations_unlock"))
    await warn_if_realtime_is_off(conn)
    return applied_now


async def warn_if_realtime_is_off(conn: asyncpg.Connection) -> str | None:
    """Logs, and returns, why Realtime would not stream the rows' progress; None when it would."""
    problem: str | None = await conn.fetchval(query("realtime_problem"))
    if problem:
        log.warning(
            "realtime_not_streaming",
            extra={"problem": problem, "hint": "apps see progress only when they read the row again"},
        )
    return problem


async def _applied(conn: asyncpg.Connection) -> dict[str, str]:
    """The versions this database recorded, with their checksums (none on a new database)."""
    if not await conn.fetchval(query("migrations_table_exists")):
        return {}
    return {r["version"]: r["checksum"] for r in await conn.fetch(query("migrations_applied"))}


async def pending(conn: asyncpg.Connection) -> list[Migration]:
    """The migrations this database has not applied yet (all of them on a new database)."""
    applied = await _applied(conn)
    return [migration for migration in load_migrations() if migration.version not in applied]


async def _apply(
    conn: asyncpg.Connection, migration: Migration, lock_timeout_s: float, attempts: int
) -> None:
    for attempt in range(1, attempts + 1):
        try:
            async with conn.transaction():
                await conn.execute(query("migrations_lock_timeout"), f"{int(lock_timeout_s * 1000)}ms")
                await conn.execute(migration.sql)
                await conn.execute(query("migrations_record"), migration.version, migration.checksum)
            return
        except asyncpg.LockNotAvailableError:
            holders = [dict(r) for r in await conn.fetch(query("migrations_lock_holders"))]
            if attempt == attempts:
                raise MigrationBlocked(_blocked_message(migration.version, holders, lock_timeout_s)) from None
            wait_s = min(BACKOFF_MAX_S, 2 ** (attempt - 1))
            log.warning(
                "migration_waiting_for_lock",
                extra={
                    "version": migration.version,
                    "attempt": attempt,
                    "retry_in_s": wait_s,
                    "holders": holders,
                },
            )
            await asyncio.sleep(wait_s)


def _blocked_message(version: str, holders: list[dict[str, object]], lock_timeout_s: float) -> str:
    lines = [
        f"migration {version} could not get its locks within {lock_timeout_s:g} s, several times; "
        "these sessions hold locks on the app's or the listener's tables:"
    ]
    for holder in holders or [{"pid": "?", "application_name": "?", "state": "?", "age_s": None}]:
        age = holder.get("age_s")
        age_text = f"{age:.0f} s" if isinstance(age, float) else "?"
        lines.append(
            f"  pid {holder['pid']}  {holder['application_name'] or '(no application name)'}  "
            f"{holder['state']}  for {age_text}"
        )
    lines.append(
        "end or commit them (SELECT pg_terminate_backend(pid) if they are stuck), then run migrate again"
    )
    return "\n".join(lines)
