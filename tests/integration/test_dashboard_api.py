"""The dashboard's API against a real Postgres: the token guards every route, and the answers add up."""

from __future__ import annotations

import ast
import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

import listener.app.dashboard
from listener.adapters.postgres.queries import blocks
from listener.playground.embedded import free_port
from tests.support.dashboard_client import answering, ask
from tests.support.database import as_app_user, insert_model
from tests.support.stack import DASHBOARD_TOKEN, Stack, running_listener, wait_for_status

BEARER = {"Authorization": f"Bearer {DASHBOARD_TOKEN}"}
WRONG_CREDENTIALS = [
    {},
    {"Authorization": "Bearer not-the-token"},
    {"Authorization": f"Bearer {DASHBOARD_TOKEN}x"},
    {"Authorization": f"Basic {DASHBOARD_TOKEN}"},
    {"Authorization": DASHBOARD_TOKEN},
    {"Cookie": "listener_dashboard=not-the-session"},
    {"Cookie": f"listener_dashboard={DASHBOARD_TOKEN}"},  # the cookie is not the token itself
]


async def first_events(port: int, headers: dict[str, str], count: int) -> list[tuple[str, dict[str, object]]]:
    """The first `count` events of /api/events, with their data."""
    events: list[tuple[str, dict[str, object]]] = []
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/api/events", headers=headers) as response,
    ):
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        while len(events) < count:
            block = (await asyncio.wait_for(response.content.readuntil(b"\n\n"), 15)).decode()
            fields = dict(line.split(": ", 1) for line in block.strip().splitlines() if ": " in line)
            if "event" in fields:
                events.append((fields["event"], json.loads(fields["data"])))
    return events


def routes(model_id: uuid.UUID) -> list[str]:
    """Every route of the dashboard that shows something."""
    return [
        "/dashboard",
        "/dashboard/static/app.js",
        "/dashboard/static/charts.js",
        "/dashboard/static/style.css",
        "/api/generations",
        "/api/generations?status=failed",
        f"/api/generations/{model_id}",
        f"/api/generations/{model_id}/files/glb",
        "/api/charts",
        "/api/replicas",
        "/api/live",
        "/api/events",
    ]


@pytest.fixture
async def conn(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(stack.db_url)
    yield connection
    await connection.close()


async def request_rows(conn: asyncpg.Connection, rows: list[tuple[uuid.UUID, str, str]]) -> list[uuid.UUID]:
    """Inserts (owner, model name, prompt) rows as their owners would, one after the other."""
    ids = []
    for owner, name, prompt in rows:
        async with as_app_user(conn, owner):
            ids.append(await insert_model(conn, owner, model_name=name, prompt=prompt))
    return ids


async def test_every_route_refuses_a_request_without_the_right_token(
    stack: Stack, conn: asyncpg.Connection
) -> None:
    owner = uuid.uuid4()
    async with running_listener(stack.settings(LISTENER_DASHBOARD_TOKEN=DASHBOARD_TOKEN)):
        (model_id,) = await request_rows(conn, [(owner, "Private lamp", "a lamp")])
        await wait_for_status(conn, [model_id])
        for number, path in enumerate(routes(model_id), start=2):
            for headers in WRONG_CREDENTIALS:  # fewer wrong tokens per address than are throttled
                answer = await ask(stack.http_port, path, headers, source=f"127.0.0.{number}")
                assert answer.status == 401, (path, headers, answer.status)
                assert "Private lamp" not in answer.body and str(owner)[:8] not in answer.body
                assert answer.headers["WWW-Authenticate"].startswith("Bearer")
            granted = await ask(stack.http_port, path, BEARER)
            assert granted.status in (200, 302), (path, granted.status, granted.body)
        wrong_form = await ask(
            stack.http_port, "/dashboard/sign-in", method="POST", data={"token": "not-the-token"}
        )
    assert wrong_form.status == 401
    assert "not the dashboard's token" in wrong_form.body and "Set-Cookie" not in wrong_form.headers
    assert "Private lamp" not in wrong_form.body


async def test_the_dashboard_is_absent_without_its_token(stack: Stack) -> None:
    async with running_listener(stack.settings()):
        await answering(stack.http_port)
        for path in [*routes(uuid.uuid4()), "/dashboard/sign-in"]:
            answer = await ask(stack.http_port, path, BEARER, method="POST" if "sign-in" in path else "GET")
            assert answer.status == 404, path
        assert (await ask(stack.http_port, "/healthz")).status == 200


async def test_a_person_signs_in_once_with_the_form(stack: Stack) -> None:
    async with running_listener(stack.settings(LISTENER_DASHBOARD_TOKEN=DASHBOARD_TOKEN)):
        await answering(stack.http_port)
        form = await ask(stack.http_port, "/dashboard")
        signed = await ask(
            stack.http_port, "/dashboard/sign-in", method="POST", data={"token": DASHBOARD_TOKEN}
        )
        cookie_header = signed.headers["Set-Cookie"]
        with_cookie = {"Cookie": cookie_header.split(";", 1)[0]}
        page = await ask(stack.http_port, "/dashboard", with_cookie)
        live = await ask(stack.http_port, "/api/live", with_cookie)
    assert form.status == 401 and '<form method="post" action="/dashboard/sign-in">' in form.body
    assert signed.status == 303 and signed.headers["Location"] == "/dashboard"
    attributes = {part.strip().lower() for part in cookie_header.split(";")}
    assert {"httponly", "samesite=strict", "path=/", "secure"} <= attributes
    assert DASHBOARD_TOKEN not in cookie_header
    assert page.status == 200 and '<table id="generations"' in page.body
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert live.status == 200 and live.headers["Cache-Control"] == "no-store"


async def test_the_api_lists_the_window_newest_first_with_filters_pages_and_details(
    stack: Stack, conn: asyncpg.Connection
) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    rows = [
        (alice, "Lamp 1", "a lamp"),
        (bob, "Rejected", "a lamp [fail]"),
        (alice, "Lamp 2", "a lamp"),
        (bob, "Empty", ""),
        (alice, "Lamp 3", "a lamp"),
    ]
    async with running_listener(stack.settings(LISTENER_DASHBOARD_TOKEN=DASHBOARD_TOKEN)):
        ids = await request_rows(conn, rows)
        ended = await wait_for_status(conn, ids)
        port = stack.http_port
        listed = (await ask(port, "/api/generations", BEARER)).json()
        failed = (await ask(port, "/api/generations?status=failed", BEARER)).json()
        of_alice = (await ask(port, f"/api/generations?user={str(alice)[:8]}", BEARER)).json()
        of_bob = (await ask(port, f"/api/generations?user={str(bob)[:8]}&hours=1", BEARER)).json()
        pages, cursor = [], ""
        while True:
            page = (await ask(port, f"/api/generations?limit=2{cursor}", BEARER)).json()
            pages.append([row["id"] for row in page["generations"]])
            if page["next"] is None:
                break
            cursor = f"&before={page['next']}"
        details = (await ask(port, f"/api/generations/{ids[0]}", BEARER)).json()
        opened = await ask(port, f"/api/generations/{ids[0]}/files/glb", BEARER)
        charts = (await ask(port, "/api/charts?hours=6", BEARER)).json()
        replicas = (await ask(port, "/api/replicas", BEARER)).json()
        live = (await ask(port, "/api/live", BEARER)).json()
        refused = [
            (await ask(port, path, BEARER)).status
            for path in (
                "/api/generations?hours=0",
                "/api/generations?hours=9999",
                "/api/generations?status=bogus",
                "/api/generations?user=xyz",
                f"/api/generations?user={str(alice)[:10]}",  # no more of an id than the page shows
                "/api/generations?before=garbage",
                "/api/generations?limit=100000",
                "/api/charts?hours=often",
            )
        ]
        missing = [
            (await ask(port, path, BEARER)).status
            for path in (
                "/api/generations/not-an-id",
                f"/api/generations/{uuid.uuid4()}",
                f"/api/generations/{ids[1]}/files/glb",
                f"/api/generations/{ids[0]}/files/secrets",
                "/dashboard/static/index.html",
                "/dashboard/static/..%2F..%2Fsettings.py",
            )
        ]

    generations = listed["generations"]
    assert isinstance(generations, list)
    assert [row["id"] for row in generations] == [str(i) for i in reversed(ids)]
    by_name = {row["model_name"]: row for row in generations}
    assert {name: row["status"] for name, row in by_name.items()} == {
        "Lamp 1": "completed",
        "Rejected": "failed",
        "Lamp 2": "completed",
        "Empty": "failed",
        "Lamp 3": "completed",
    }
    assert by_name["Rejected"]["reason"] == stack.simulator.config.failure_message
    assert by_name["Empty"]["reason"] == "The prompt is empty."
    assert by_name["Lamp 1"]["reason"] is None and by_name["Lamp 1"]["kind"] == "text_to_3d"
    assert by_name["Lamp 1"]["user"] == str(alice)[:8] and by_name["Empty"]["user"] == str(bob)[:8]
    assert all(row["waiting_s"] is not None for row in generations)
    assert all(row["running_s"] is not None for row in generations if row["status"] == "completed")

    assert {row["model_name"] for row in failed["generations"]} == {"Rejected", "Empty"}
    assert [row["model_name"] for row in of_alice["generations"]] == ["Lamp 3", "Lamp 2", "Lamp 1"]
    assert [row["model_name"] for row in of_bob["generations"]] == ["Empty", "Rejected"]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [i for p in pages for i in p] == [str(i) for i in reversed(ids)]

    completed = ended[ids[0]]
    assert details["task_id"] and details["attempts"] == 1 and details["progress"] == 100
    files = details["files"]
    assert isinstance(files, dict)
    assert files["glb"]["path"].startswith(f"{str(alice)[:8]}…/generated-models/")
    assert files["glb"]["path"].endswith(".glb") and completed["storage_path"].endswith(".glb")
    assert files["glb"]["open"] == f"/api/generations/{ids[0]}/files/glb"
    assert opened.status == 302 and opened.headers["Location"] == completed["download_url"]

    assert {k: v for k, v in charts["totals"].items() if v} == {"completed": 3, "failed": 2}
    per_hour = charts["per_hour"]
    assert isinstance(per_hour, list)
    assert sum(h["completed"] for h in per_hour) == 3 and sum(h["failed"] for h in per_hour) == 2
    durations = charts["durations"]
    assert isinstance(durations, dict)
    assert durations["count"] == 3 and 0 < durations["p50_s"] <= durations["p95_s"]
    assert sum(b["count"] for b in durations["buckets"]) == 3
    assert sorted((f["reason"], f["count"]) for f in charts["failures"]) == sorted(
        [(stack.simulator.config.failure_message, 1), ("The prompt is empty.", 1)]
    )
    queue = charts["queue"]
    assert isinstance(queue, dict)
    assert max(s["most"] for s in queue["depth"]) >= 1 and queue["depth"][-1]["last"] == 0

    assert replicas["connected"] == 1
    assert live["in_flight"] == [] and live["newest_request"] and live["newest_end"]
    assert refused == [400] * 8
    assert missing == [404] * 6

    everything = json.dumps([listed, failed, of_alice, of_bob, details, charts, replicas, live])
    assert str(alice) not in everything and str(bob) not in everything


async def test_the_event_stream_tells_of_a_new_row_and_its_progress(
    stack: Stack, conn: asyncpg.Connection
) -> None:
    """A watcher hears of a request as it is made, then of its progress, without asking again."""
    stack.simulator.config.duration_s = 4.0  # slow enough for progress to be seen moving
    async with running_listener(stack.settings(LISTENER_DASHBOARD_TOKEN=DASHBOARD_TOKEN)):
        await answering(stack.http_port)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{stack.http_port}/api/events", headers=BEARER) as response,
        ):
            seen: list[dict[str, object]] = []

            async def next_state() -> dict[str, object]:
                while True:
                    block = (await asyncio.wait_for(response.content.readuntil(b"\n\n"), 15)).decode()
                    if block.startswith("event: live"):
                        state = json.loads(block.split("data: ", 1)[1])
                        assert isinstance(state, dict)
                        seen.append(state)
                        return state

            before = await next_state()
            (model_id,) = await request_rows(conn, [(uuid.uuid4(), "Streamed", "a lamp")])
            deadline = time.monotonic() + 20
            progress: list[int] = []
            while time.monotonic() < deadline and len(set(progress)) < 2:
                state = await next_state()
                mine = [row for row in state["in_flight"] if row["id"] == str(model_id)]  # type: ignore[attr-defined]
                progress += [row["progress"] for row in mine]
    assert before["in_flight"] == []
    assert any(state["newest_request"] != before["newest_request"] for state in seen)
    assert len(set(progress)) >= 2 and progress == sorted(progress), progress


async def test_the_api_answers_503_while_the_database_is_away(stack: Stack) -> None:
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    settings = stack.settings(DATABASE_URL=unreachable, LISTENER_DASHBOARD_TOKEN=DASHBOARD_TOKEN)
    async with running_listener(settings):
        await answering(stack.http_port, ready=False)
        listed = await ask(stack.http_port, "/api/generations", BEARER)
        events = await first_events(stack.http_port, BEARER, 1)
        anonymous = await ask(stack.http_port, "/api/generations")
    assert listed.status == 503 and "database" in str(listed.json()["error"])
    assert events[0][0] == "unavailable"
    assert anonymous.status == 401


STATEMENTS = blocks("listener.app.dashboard", "queries.sql")


@pytest.mark.parametrize("which", ["fresh", "app"])
async def test_every_dashboard_statement_prepares_on_a_migrated_database(
    which: str, db_url: str, app_db_url: str
) -> None:
    conn = await asyncpg.connect(db_url if which == "fresh" else app_db_url)
    refused: dict[str, str] = {}
    try:
        for name, sql in STATEMENTS.items():
            try:
                await conn.prepare(sql)
            except asyncpg.PostgresError as exc:
                refused[name] = f"{type(exc).__name__}: {exc}"
    finally:
        await conn.close()
    assert refused == {}


def test_every_dashboard_statement_is_read_somewhere() -> None:
    source = Path(listener.app.dashboard.__file__).parent / "reads.py"
    literals = {
        node.value
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    assert sorted(set(STATEMENTS) - literals) == []
