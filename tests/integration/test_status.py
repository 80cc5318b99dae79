"""`listener status` against a database with rows in every state."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from listener.playground.embedded import free_port
from tests.support.cli import run_listener

REPO = Path(__file__).resolve().parents[2]


async def run_status(database_url: str, *args: str, cwd: Path) -> tuple[int, str, str]:
    """`python -m listener status ARGS` with only DATABASE_URL set; returns (exit, stdout, stderr)."""
    return await run_listener(database_url, "status", *args, cwd=cwd)


async def insert(conn: asyncpg.Connection, name: str, status: str = "pending") -> uuid.UUID:
    """A row as a frontend inserts it (a `pending` one gets its job from the trigger)."""
    model_id: uuid.UUID = await conn.fetchval(
        "INSERT INTO public.ai_generated_models (user_id, generation_type, prompt, model_name, "
        "storage_path, status) VALUES ($1, 'text_to_3d', 'a boat', $2, '', $3) RETURNING id",
        uuid.uuid4(),
        name,
        status,
    )
    return model_id


async def lease(
    conn: asyncpg.Connection, model_id: uuid.UUID, owner: str, progress: int, left_s: int
) -> None:
    """What a replica's claim and progress writes leave behind."""
    await conn.execute(
        "UPDATE listener.jobs SET lease_owner = $2, lease_expires_at = now() + make_interval(secs => $3), "
        "claimed_at = now() - interval '20 seconds', attempts = 1 WHERE model_id = $1",
        model_id,
        owner,
        left_s,
    )
    await conn.execute(
        "UPDATE public.ai_generated_models SET status = 'processing', progress = $2 WHERE id = $1",
        model_id,
        progress,
    )


async def finish(conn: asyncpg.Connection, model_id: uuid.UUID, outcome: str) -> None:
    """What the listener's complete or fail leaves behind."""
    await conn.execute(
        "UPDATE listener.jobs SET finished_at = now(), outcome = $2 WHERE model_id = $1", model_id, outcome
    )
    await conn.execute(
        "UPDATE public.ai_generated_models SET status = $2::text, "
        "error_message = CASE WHEN $2::text = 'failed' THEN 'It broke.' END WHERE id = $1",
        model_id,
        outcome,
    )


async def test_status_reports_counts_in_flight_rows_oldest_pending_and_leases(
    db_url: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        oldest = await insert(conn, "Oldest")
        await conn.execute(
            "UPDATE listener.jobs SET enqueued_at = now() - interval '5 minutes' WHERE model_id = $1", oldest
        )
        await insert(conn, "Newer")
        for name, owner, progress, left_s in (("A", "replica-a", 40, 60), ("B", "replica-a", 70, 60)):
            await lease(conn, await insert(conn, name), owner, progress, left_s)
        await lease(conn, await insert(conn, "Orphan"), "replica-b", 10, -10)  # its replica died
        await finish(conn, await insert(conn, "Done"), "completed")
        await finish(conn, await insert(conn, "Broken"), "failed")
        await insert(conn, "Legacy", status="completed")  # the app's older path: not the listener's
        await insert(conn, "Shelved", status="archived")
    finally:
        await conn.close()

    code, out, err = await run_status(db_url, "--json", cwd=tmp_path)
    assert (code, err) == (0, "")
    report: dict[str, Any] = json.loads(out)
    assert report["counts"] == {"pending": 2, "processing": 3, "completed": 1, "failed": 1, "cancelled": 0}
    assert report["all_rows"] == {
        "pending": 2,
        "processing": 3,
        "completed": 2,
        "failed": 1,
        "cancelled": 0,
        "archived": 1,
    }
    flying = {row["model_name"]: row for row in report["in_flight"]}
    assert {name: (row["progress"], row["lease_owner"]) for name, row in flying.items()} == {
        "A": (40, "replica-a"),
        "B": (70, "replica-a"),
        "Orphan": (10, "replica-b"),
    }
    assert flying["Orphan"]["lease_left_s"] < 0 < flying["A"]["lease_left_s"]
    assert all(row["age_s"] >= 0 for row in flying.values())
    assert report["oldest_pending"]["model_id"] == str(oldest)
    assert report["oldest_pending"]["age_s"] >= 300
    assert report["leases"] == {
        "replica-a": {"held": 2, "expired": 0},
        "replica-b": {"held": 1, "expired": 1},
    }

    code, text, err = await run_status(db_url, cwd=tmp_path)
    assert (code, err) == (0, "")
    for status, owned in report["counts"].items():
        assert re.search(rf"^\s+{status}\s+{owned}\s+{report['all_rows'][status]}$", text, re.MULTILINE), text
    assert "oldest pending: 5m 0" in text
    assert "in flight: 3" in text
    assert re.search(r"^\s+replica-a\s+2 held$", text, re.MULTILINE)
    assert re.search(r"^\s+replica-b\s+1 held, 1 expired$", text, re.MULTILINE)


async def test_status_on_an_empty_database_has_zero_counts(db_url: str, tmp_path: Path) -> None:
    code, out, _ = await run_status(db_url, "--json", cwd=tmp_path)
    report = json.loads(out)
    assert code == 0
    assert set(report["counts"].values()) == {0}
    assert (report["in_flight"], report["oldest_pending"], report["leases"]) == ([], None, {})


async def test_status_unreachable_database_exits_1_with_one_line_and_no_password(tmp_path: Path) -> None:
    url = f"postgresql://app:s3cret-pw@127.0.0.1:{free_port()}/app"
    code, out, err = await run_status(url, cwd=tmp_path)
    assert code == 1
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "cannot reach the database at postgresql://app:***@127.0.0.1" in err
    assert "s3cret-pw" not in err


async def test_status_shows_escape_codes_in_names_instead_of_obeying_them(
    db_url: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        spoof = "Boat\x1b[2J\x1b[H\nleases per replica: none\r\u202eevil"
        model_id = await insert(conn, spoof)
        await lease(conn, model_id, "replica-a\x1b[31m", 40, 30)
    finally:
        await conn.close()
    code, out, _ = await run_status(db_url, cwd=tmp_path)
    assert code == 0
    assert "\x1b" not in out and "\r" not in out and "\u202e" not in out
    assert r"Boat\x1b[2J\x1b[H\nleases per replica: none\r\u202eevil" in out
    # No line forged by a model name: the only line that starts so is the real one.
    assert [line for line in out.splitlines() if line.startswith("leases per replica:")] == [
        "leases per replica: 1"
    ]
    code, out, _ = await run_status(db_url, "--json", cwd=tmp_path)
    assert json.loads(out)["in_flight"][0]["model_name"] == spoof  # JSON keeps the text exactly


async def test_status_hides_a_password_given_as_a_parameter(tmp_path: Path) -> None:
    url = f"postgresql://app@127.0.0.1:{free_port()}/app?password=s3cret-param&sslmode=disable"
    code, _, err = await run_status(url, cwd=tmp_path)
    assert code == 1
    assert "s3cret-param" not in err
    assert "password=***" in err
