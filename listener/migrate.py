"""Applies the numbered migrations of `sql/` in order, once each, under an advisory lock."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from listener.queries import query

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    """One file of `sql/`: its version (the file name without `.sql`) and its text."""

    version: str
    sql: str

    @property
    def checksum(self) -> str:
        """A digest of the text, to notice a migration edited after it was applied."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations_dir() -> Path:
    """Where the migrations are: inside the installed package, or at the top of a checkout."""
    package = Path(__file__).resolve().parent
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


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Applies what is not applied yet; returns the versions it applied (none the second time)."""
    applied_now: list[str] = []
    await conn.execute(query("migrations_lock"))
    try:
        await conn.execute(query("migrations_bootstrap"))
        applied = {r["version"]: r["checksum"] for r in await conn.fetch(query("migrations_applied"))}
        for migration in load_migrations():
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    log.warning("migration_changed_after_apply", extra={"version": migration.version})
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(query("migrations_record"), migration.version, migration.checksum)
            log.info("migration_applied", extra={"version": migration.version})
            applied_now.append(migration.version)
    finally:
        await conn.execute(query("migrations_unlock"))
    return applied_now
