"""`listener status`: what the listener is doing, read from the database."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg

from listener.adapters.postgres.pool import connect_kwargs
from listener.adapters.postgres.queries import query
from listener.errors import StatusUnavailable
from listener.redact import printable, redact_url, register_secret, scrub, url_secrets

STATUSES = ("pending", "processing", "completed", "failed", "cancelled")
IN_FLIGHT_SHOWN = 50
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class StatusReport:
    """Everything `listener status` prints, in the shape of its JSON."""

    database: str
    counts: dict[str, int]
    all_rows: dict[str, int]
    in_flight: list[dict[str, Any]]
    oldest_pending: dict[str, Any] | None
    leases: dict[str, dict[str, int]] = field(default_factory=dict)
    # The pause in force (`listener pause`): who set it, why, how long ago; None while claiming.
    paused: dict[str, Any] | None = None

    def to_json(self) -> str:
        """One JSON object, for scripts."""
        return json.dumps(asdict(self), indent=2, default=str)


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@asynccontextmanager
async def operator_connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection for an operator's command; StatusUnavailable, in one line, when it cannot be used."""
    safe_url = redact_url(database_url)
    for secret in url_secrets(database_url):
        register_secret(secret)
    try:
        conn = await asyncpg.connect(**{**connect_kwargs(database_url), "timeout": CONNECT_TIMEOUT_S})
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StatusUnavailable(f"cannot reach the database at {safe_url}: {_reason(exc)}") from exc
    try:
        yield conn
    except asyncpg.UndefinedTableError as exc:
        raise StatusUnavailable(f"{safe_url} has no listener tables yet; run `listener migrate`") from exc
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StatusUnavailable(f"reading {safe_url} failed: {_reason(exc)}") from exc
    finally:
        await conn.close()


async def read_status(database_url: str) -> StatusReport:
    """Reads counts, in-flight rows, the oldest pending row and leases; raises StatusUnavailable."""
    async with operator_connection(database_url) as conn:
        counts = await conn.fetch(query("status_counts"))
        in_flight = await conn.fetch(query("status_in_flight"), IN_FLIGHT_SHOWN)
        oldest = await conn.fetchrow(query("status_oldest_pending"))
        leases = await conn.fetch(query("status_leases"))
        paused = await conn.fetchrow(query("claims_paused"))
    safe_url = redact_url(database_url)
    owned = dict.fromkeys(STATUSES, 0) | {r["status"]: r["owned"] for r in counts if r["owned"]}
    return StatusReport(
        database=safe_url,
        counts=owned,
        all_rows=dict.fromkeys(STATUSES, 0) | {r["status"]: r["total"] for r in counts},
        in_flight=[
            {
                "model_id": str(r["model_id"]),
                "model_name": r["model_name"],
                "user_id": str(r["user_id"]),
                "progress": r["progress"],
                "age_s": _seconds(r["age_s"]),
                "running_s": _seconds(r["running_s"]),
                "lease_owner": r["lease_owner"],
                "lease_left_s": _seconds(r["lease_left_s"]),
                "attempts": r["attempts"],
            }
            for r in in_flight
        ],
        oldest_pending=None
        if oldest is None
        else {
            "model_id": str(oldest["model_id"]),
            "model_name": oldest["model_name"],
            "age_s": _seconds(oldest["age_s"]),
        },
        leases={r["lease_owner"]: {"held": r["held"], "expired": r["expired"]} for r in leases},
        paused=None
        if paused is None
        else {"by": paused["paused_by"], "reason": paused["reason"], "for_s": _seconds(paused["paused_s"])},
    )


def _reason(exc: BaseException) -> str:
    """The error's first line, with every registered secret replaced."""
    return scrub(f"{type(exc).__name__}: {exc}".splitlines()[0])


def human_age(seconds: float | None) -> str:
    """A duration as a person reads it: 42s, 3m 05s, 2h 10m, 4d 3h."""
    if seconds is None:
        return "-"
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600}h"


def bar(progress: int, width: int = 20) -> str:
    """A progress bar of `width` characters for 0..100."""
    filled = max(0, min(width, progress * width // 100))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def render(report: StatusReport) -> str:
    """The report as text for a terminal; what came from the database cannot move its cursor."""
    owned_total = sum(report.counts.values())
    lines = [
        f"database  {report.database}",
        f"rows the listener owns: {owned_total} (of {sum(report.all_rows.values())} "
        "in public.ai_generated_models)",
        f"  {'status':<12}{'listener':>9}{'all rows':>10}",
    ]
    if report.paused is not None:
        why = f": {report.paused['reason']}" if report.paused["reason"] else ""
        lines.append(
            f"CLAIMS PAUSED by {report.paused['by']} {human_age(report.paused['for_s'])} ago{why} "
            "(`listener resume` ends it)"
        )
    for status, total in report.all_rows.items():
        lines.append(f"  {status:<12}{report.counts.get(status, 0):>9}{total:>10}")
    oldest = report.oldest_pending
    if oldest is None:
        lines.append("oldest pending: none")
    else:
        lines.append(
            f"oldest pending: {human_age(oldest['age_s'])} ({oldest['model_name']}, {oldest['model_id']})"
        )
    lines.append(f"in flight: {len(report.in_flight)}")
    for row in report.in_flight:
        lines.append(
            f"  {row['model_id']}  {bar(row['progress'])} {row['progress']:>3}%  "
            f"age {human_age(row['age_s'])}  {row['model_name']}  (lease: {row['lease_owner'] or '-'})"
        )
    lines.append(f"leases per replica: {len(report.leases) or 'none'}")
    for owner, held in report.leases.items():
        expired = f", {held['expired']} expired" if held["expired"] else ""
        lines.append(f"  {owner}  {held['held']} held{expired}")
    # Model names and owners are anyone's text: escape codes and line breaks are shown, not obeyed.
    return "\n".join(printable(line) for line in lines)
