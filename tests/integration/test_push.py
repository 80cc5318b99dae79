"""A finished row is told to its owner once: the notification row, and one push per live device.

FCM and Google's OAuth token endpoint are a local server (tests/support/fake_fcm.py); the
credentials file is made here with a fresh RSA key and points its token_uri there, so the
real firebase-admin and google-auth code runs and nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from listener.adapters.fcm import FcmSender
from listener.adapters.postgres.jobs import PgJobStore
from listener.adapters.postgres.push_store import PushStore
from listener.app.service import serve
from listener.core.data import CompletedColumns, FinishedRow
from listener.errors import ConfigError
from listener.logs import JsonFormatter
from listener.notify.notifier import PushNotifier
from listener.notify.texts import NotificationTexts
from listener.retry import RetryPolicy
from tests.support.database import APP_TEMPLATE, FRESH_TEMPLATE, as_app_user, database_from, insert_model
from tests.support.fake_fcm import FakeFcm
from tests.support.stack import Stack, wait_for_status, wait_until

REPO = Path(__file__).resolve().parents[2]
NO_WAIT = RetryPolicy(deadline_s=30.0, max_attempts=3).scaled(0)
TEXTS = NotificationTexts()
OWNER = "test-replica"


# -- fixtures and helpers ---------------------------------------------------------------


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[PgJobStore]:
    async with PgJobStore.connect(db_url) as database:
        yield database


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(db_url)
    try:
        yield connection
    finally:
        await connection.close()


async def add_user(conn: asyncpg.Connection, tokens: Sequence[str] = ()) -> uuid.UUID:
    """A user (in auth.users where that table exists) with live device tokens."""
    user = uuid.uuid4()
    if await conn.fetchval("SELECT to_regclass('auth.users') IS NOT NULL"):
        await conn.execute("INSERT INTO auth.users (id, email) VALUES ($1, $2)", user, f"{user}@example.com")
    for token in tokens:
        await conn.execute(
            "INSERT INTO public.user_device_tokens (user_id, device_token, platform) "
            "VALUES ($1, $2, 'android')",
            user,
            token,
        )
    return user


async def finish_row(
    conn: asyncpg.Connection,
    db: PgJobStore,
    user: uuid.UUID,
    *,
    model_name: str = "Boat",
    reason: str | None = None,
) -> FinishedRow:
    """A pending row, leased and ended by the listener's own statements: completed, or failed."""
    model_id = await insert_model(conn, user, model_name=model_name)
    await conn.execute(
        "UPDATE listener.jobs SET lease_owner = $2, lease_expires_at = now() + interval '1 minute' "
        "WHERE model_id = $1",
        model_id,
        OWNER,
    )
    if reason is not None:
        finished = await db.fail(model_id, OWNER, reason, {})
    else:
        results = CompletedColumns(
            f"{user}/generated-models/{model_id}.glb", "https://cdn/m.glb", 10, None, None, None, None, {}
        )
        finished = await db.complete(model_id, OWNER, results)
    assert finished is not None
    return finished


async def notifications(conn: asyncpg.Connection, model_id: uuid.UUID) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM public.notifications WHERE related_id = $1", str(model_id)
    )
    return rows


async def job(conn: asyncpg.Connection, model_id: uuid.UUID) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM listener.jobs WHERE model_id = $1", model_id)
    assert row is not None
    return row


def authorization(headers: dict[str, str]) -> str | None:
    """The Authorization header of a request, whatever the case of its name."""
    return next((v for k, v in headers.items() if k.lower() == "authorization"), None)


class JsonLines(logging.Handler):
    """Every record, formatted as the listener writes its log (JSON, secrets scrubbed)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []
        self.raw: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.raw.append(f"{record.getMessage()} {record.__dict__}")
        self.lines.append(self.format(record))


def fcm_body(token: str, model_id: uuid.UUID, kind: str, title: str, body: str) -> dict[str, Any]:
    """The exact request body FCM must receive."""
    return {
        "message": {
            "token": token,
            "notification": {"title": title, "body": body},
            "data": {"type": kind, "related_id": str(model_id), "related_type": "ai_model"},
            "android": {
                "priority": "high",
                "notification": {"channel_id": "factor_default", "sound": "default", "tag": str(model_id)},
            },
            "apns": {
                "headers": {"apns-collapse-id": str(model_id)},
                "payload": {"aps": {"sound": "default"}},
            },
        }
    }


# -- delivery ---------------------------------------------------------------------------

SHAPES = {
    # The fresh schema's is_active; the app's later push_enabled + device_id; a table with no flag.
    "is_active": (FRESH_TEMPLATE, None),
    "push_enabled": (APP_TEMPLATE, None),
    "unflagged": (FRESH_TEMPLATE, "ALTER TABLE public.user_device_tokens DROP COLUMN is_active"),
}


@pytest.fixture(params=sorted(SHAPES))
async def shaped_db_url(request: pytest.FixtureRequest, templates: str) -> AsyncIterator[tuple[str, str]]:
    template, alter = SHAPES[request.param]
    async with database_from(templates, template) as url:
        if alter:
            c = await asyncpg.connect(url)
            try:
                await c.execute(alter)
            finally:
                await c.close()
        yield request.param, url


async def test_three_tokens_get_two_exact_pushes_and_the_dead_one_is_deactivated(
    shaped_db_url: tuple[str, str], fcm: FakeFcm, sender: FcmSender
) -> None:
    shape, url = shaped_db_url
    fcm.unregistered = {"token-dead"}
    conn = await asyncpg.connect(url)
    try:
        async with PgJobStore.connect(url) as db:
            user = await add_user(conn, ["token-phone", "token-tablet", "token-dead"])
            stranger = await add_user(conn, ["token-stranger"])
            if shape != "unflagged":  # a token switched off must not be sent to
                flag = "is_active" if shape == "is_active" else "push_enabled"
                await conn.execute(
                    f"INSERT INTO public.user_device_tokens (user_id, device_token, platform, {flag}) "
                    "VALUES ($1, 'token-off', 'ios', false)",
                    user,
                )
            finished = await finish_row(conn, db, user, model_name="Chair")
            notifier = PushNotifier(PushStore(db.pg), sender, TEXTS, NO_WAIT)
            await notifier.start()
            await notifier.model_finished(finished)
            # Told once: a second call (a duplicate completion) and a sweep change nothing.
            await notifier.model_finished(finished)
            assert await notifier.sweep() == 0

            title = "AI 모델 생성 완료"
            body = "'Chair' 모델이 성공적으로 생성되었습니다."
            sent = sorted(fcm.delivered, key=lambda r: r.token)
            assert [r.body for r in sent] == [
                fcm_body(token, finished.model_id, "ai_model_complete", title, body)
                for token in ("token-phone", "token-tablet")
            ]
            assert sorted(r.token for r in fcm.requests) == ["token-dead", "token-phone", "token-tablet"]
            # Each went with the access token the OAuth endpoint issued for this service account.
            assert [fcm.token_requests, len(fcm.issued)] == [1, 1]
            assert {authorization(r.headers) for r in fcm.requests} == {f"Bearer {t}" for t in fcm.issued}
            assert fcm.token_requests == 1

            rows = await conn.fetch(
                "SELECT * FROM public.user_device_tokens WHERE user_id = ANY($1::uuid[])", [user, stranger]
            )
            live = {r["device_token"]: r for r in rows}
            if shape == "unflagged":
                assert set(live) == {"token-phone", "token-tablet", "token-stranger"}
            else:
                flag = "is_active" if shape == "is_active" else "push_enabled"
                assert {t: r[flag] for t, r in live.items()} == {
                    "token-phone": True,
                    "token-tablet": True,
                    "token-dead": False,
                    "token-off": False,
                    "token-stranger": True,
                }

            [note] = await notifications(conn, finished.model_id)
            assert (note["user_id"], note["type"], note["title"], note["message"], note["message_en"]) == (
                user,
                "ai_model_complete",
                title,
                body,
                "'Chair' model has been successfully created.",
            )
            assert (note["related_type"], note["read"]) == ("ai_model", False)
            state = await job(conn, finished.model_id)
            assert state["push_result"] == "sent"
            assert state["push_sent_at"] is not None and state["notification_written_at"] is not None
            assert state["push_owner"] is None
    finally:
        await conn.close()


async def test_a_failed_row_is_told_with_its_reason(
    conn: asyncpg.Connection, db: PgJobStore, fcm: FakeFcm, sender: FcmSender
) -> None:
    user = await add_user(conn, ["token-1"])
    reason = "the AI server could not make a model of this image"
    finished = await finish_row(conn, db, user, model_name="Cat", reason=reason)
    await PushNotifier(PushStore(db.pg), sender, TEXTS, NO_WAIT).model_finished(finished)

    [note] = await notifications(conn, finished.model_id)
    assert note["type"] == "ai_model_failed"
    assert note["title"] == "AI 모델 생성 실패"
    assert note["message"] == f"'Cat' 모델 생성에 실패했습니다: {reason}"
    assert note["message_en"] == f"'Cat' model could not be created: {reason}"
    assert json.loads(note["metadata"])["reason"] == reason
    [push] = fcm.delivered
    assert push.body == fcm_body(
        "token-1", finished.model_id, "ai_model_failed", note["title"], note["message"]
    )


async def test_settings_off_get_the_row_but_no_push_and_no_tokens_is_no_error(
    conn: asyncpg.Connection,
    db: PgJobStore,
    fcm: FakeFcm,
    sender: FcmSender,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pushes_off = await add_user(conn, ["token-a"])
    ai_off = await add_user(conn, ["token-b"])
    tokenless = await add_user(conn)
    await conn.execute(
        "INSERT INTO public.user_notification_settings (user_id, push_notifications, ai_complete_enabled) "
        "VALUES ($1, false, true), ($2, true, false)",
        pushes_off,
        ai_off,
    )
    notifier = PushNotifier(PushStore(db.pg), sender, TEXTS, NO_WAIT)
    caplog.set_level(logging.INFO, logger="listener")
    expected = {}
    for user, result in ((pushes_off, "disabled"), (ai_off, "disabled"), (tokenless, "no_tokens")):
        finished = await finish_row(conn, db, user)
        await notifier.model_finished(finished)
        expected[finished.model_id] = result

    for model_id, result in expected.items():
        assert len(await notifications(conn, model_id)) == 1
        assert (await job(conn, model_id))["push_result"] == result
    assert fcm.requests == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_without_credentials_rows_are_written_and_pushes_off_is_said_once(
    conn: asyncpg.Connection, db: PgJobStore, caplog: pytest.LogCaptureFixture
) -> None:
    user = await add_user(conn, ["token-1"])
    caplog.set_level(logging.INFO, logger="listener")
    notifier = PushNotifier(PushStore(db.pg), None, TEXTS, NO_WAIT)
    await notifier.start()
    rows = [await finish_row(conn, db, user, model_name=name) for name in ("A", "B")]
    for finished in rows:
        await notifier.model_finished(finished)
    for finished in rows:
        assert len(await notifications(conn, finished.model_id)) == 1
        assert (await job(conn, finished.model_id))["push_result"] == "off"
    assert [r.getMessage() for r in caplog.records].count("push_off") == 1


# -- FCM trouble ------------------------------------------------------------------------


async def test_unavailable_twice_then_ok_is_delivered_once(
    conn: asyncpg.Connection, db: PgJobStore, fcm: FakeFcm, sender: FcmSender
) -> None:
    fcm.fail_next = [503, 503]
    user = await add_user(conn, ["token-1"])
    finished = await finish_row(conn, db, user)
    await PushNotifier(PushStore(db.pg), sender, TEXTS, NO_WAIT).model_finished(finished)

    assert [r.status for r in fcm.requests] == [503, 503, 200]
    assert len(fcm.delivered) == 1
    assert (await job(conn, finished.model_id))["push_result"] == "sent"


async def test_quota_and_internal_errors_are_retried_too(
    conn: asyncpg.Connection, db: PgJobStore, fcm: FakeFcm, sender: FcmSender
) -> None:
    fcm.fail_next = [429, 500]
    user = await add_user(conn, ["token-1"])
    finished = await finish_row(conn, db, user)
    await PushNotifier(PushStore(db.pg), sender, TEXTS, NO_WAIT).model_finished(finished)
    assert [r.status for r in fcm.requests] == [429, 500, 200]


async def test_sender_errors_are_logged_loudly_once_and_the_row_stays_completed(
    conn: asyncpg.Connection,
    db: PgJobStore,
    fcm: FakeFcm,
    sender: FcmSender,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fcm.always = (403, None, "The caller does not have permission")  # the project's setup, not a token
    user = await add_user(conn, ["token-1", "token-2"])
    notifier = PushNotifier(PushStore(db.pg), sender, TEXTS, NO_WAIT)
    rows = [await finish_row(conn, db, user, model_name=name) for name in ("A", "B")]
    for finished in rows:
        await notifier.model_finished(finished)

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["push_config_error"]
    assert errors[0].code == "PERMISSION_DENIED"  # type: ignore[attr-defined]
    assert len(fcm.requests) == 4  # not retried
    for finished in rows:
        assert (await job(conn, finished.model_id))["push_result"] == "config_error"
        status = await conn.fetchval(
            "SELECT status FROM public.ai_generated_models WHERE id = $1", finished.model_id
        )
        assert status == "completed"
    tokens = await conn.fetchval("SELECT count(*) FROM public.user_device_tokens WHERE is_active")
    assert tokens == 2


async def test_an_access_token_revoked_early_is_refreshed_once(
    conn: asyncpg.Connection, db: PgJobStore, fcm: FakeFcm, sender: FcmSender
) -> None:
    user = await add_user(conn, ["token-1", "token-2", "token-3"])
    notifier = PushNotifier(PushStore(db.pg), sender, TEXTS, NO_WAIT)
    await notifier.model_finished(await finish_row(conn, db, user, model_name="A"))
    fcm.issued.clear()  # FCM stops accepting the token google-auth still thinks valid
    await notifier.model_finished(await finish_row(conn, db, user, model_name="B"))

    assert fcm.token_requests == 2  # one refresh for the three messages that met a 401
    assert [r.status for r in fcm.requests].count(401) == 3
    assert len(fcm.delivered) == 6


async def test_a_token_fcm_calls_malformed_or_foreign_is_deactivated_at_once_and_alone(
    conn: asyncpg.Connection, db: PgJobStore, fcm: FakeFcm, sender: FcmSender
) -> None:
    """Per-token errors concern that token only, from the first push of the process on."""
    fcm.invalid, fcm.mismatched = {"token-bad"}, {"token-foreign"}
    user = await add_user(conn, ["token-bad", "token-foreign", "token-good"])
    await PushNotifier(PushStore(db.pg), sender, TEXTS, NO_WAIT).model_finished(
        await finish_row(conn, db, user)
    )
    active = await conn.fetch(
        "SELECT device_token, is_active FROM public.user_device_tokens ORDER BY device_token"
    )
    assert [(r["device_token"], r["is_active"]) for r in active] == [
        ("token-bad", False),
        ("token-foreign", False),
        ("token-good", True),
    ]
    assert len(fcm.delivered) == 1


async def test_a_payload_fcm_refuses_deactivates_no_token(
    conn: asyncpg.Connection, db: PgJobStore, fcm: FakeFcm, sender: FcmSender
) -> None:
    fcm.always = (400, "INVALID_ARGUMENT", "Invalid value at 'message.data[0].value'")
    user = await add_user(conn, ["token-1", "token-2"])
    finished = await finish_row(conn, db, user)
    await PushNotifier(PushStore(db.pg), sender, TEXTS, NO_WAIT).model_finished(finished)
    assert await conn.fetchval("SELECT count(*) FROM public.user_device_tokens WHERE is_active") == 2
    assert (await job(conn, finished.model_id))["push_result"] == "config_error"


async def test_fcm_down_for_good_rows_complete_and_are_pushed_when_it_returns(
    stack: Stack, fcm: FakeFcm, sender: FcmSender
) -> None:
    """The whole listener: FCM answering 503 to everything neither fails nor holds up rows."""
    fcm.down = True
    conn = await asyncpg.connect(stack.db_url)
    try:
        async with PgJobStore.connect(stack.db_url) as db:
            notifier = PushNotifier(PushStore(db.pg), sender, TEXTS, NO_WAIT)
            user = await add_user(conn, ["token-1"])
            async with as_app_user(conn, user):
                ids = [await insert_model(conn, user, model_name=name) for name in ("One", "Two", "Three")]
            stop = asyncio.Event()
            task = asyncio.create_task(serve(stack.settings(), stop, notifier=notifier, retry=NO_WAIT))
            try:
                rows = await wait_for_status(conn, ids)
                await wait_until(
                    conn,
                    "SELECT count(*) = 3 FROM listener.jobs "
                    "WHERE model_id = ANY($1::uuid[]) AND push_result = 'retry'",
                    ids,
                )
            finally:
                stop.set()
                await asyncio.wait_for(task, timeout=30)
            assert {r["status"] for r in rows.values()} == {"completed"}
            assert len(fcm.requests) == 3 * NO_WAIT.max_attempts and fcm.delivered == []
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM public.notifications WHERE related_id = ANY($1::text[])",
                    [str(i) for i in ids],
                )
                == 3
            )

            fcm.down = False
            assert await notifier.sweep() == 3
            assert sorted(r.body["message"]["data"]["related_id"] for r in fcm.delivered) == sorted(
                map(str, ids)
            )
            assert await notifier.sweep() == 0
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM public.notifications WHERE related_id = ANY($1::text[])",
                    [str(i) for i in ids],
                )
                == 3
            )
    finally:
        await conn.close()


async def test_a_push_tried_too_often_is_given_up(
    conn: asyncpg.Connection, db: PgJobStore, fcm: FakeFcm, sender: FcmSender
) -> None:
    fcm.down = True
    user = await add_user(conn, ["token-1"])
    finished = await finish_row(conn, db, user)
    notifier = PushNotifier(PushStore(db.pg), sender, TEXTS, NO_WAIT, max_attempts=2)
    await notifier.model_finished(finished)
    assert (await job(conn, finished.model_id))["push_result"] == "retry"
    assert await notifier.sweep() == 1
    state = await job(conn, finished.model_id)
    assert (state["push_result"], state["push_attempts"]) == ("gave_up", 2)
    assert await notifier.sweep() == 0


# -- once, across crashes and replicas --------------------------------------------------

CRASHING_REPLICA = """
import asyncio, sys
from pathlib import Path
from listener.adapters.postgres.jobs import PgJobStore
from listener.notify.notifier import PushNotifier
from listener.adapters.postgres.push_store import PushStore
from listener.notify.texts import NotificationTexts
from listener.adapters.fcm import FcmSender
from listener.retry import RetryPolicy

async def main(url, credentials, endpoint):
    async with PgJobStore.connect(url) as db:
        sender = FcmSender.from_credentials(Path(credentials), endpoint)
        await PushNotifier(PushStore(db.pg), sender, NotificationTexts(), RetryPolicy().scaled(0)).sweep()

asyncio.run(main(*sys.argv[1:]))
"""


async def test_a_replica_killed_after_the_row_and_before_the_push_is_finished_once(
    db_url: str,
    conn: asyncpg.Connection,
    db: PgJobStore,
    fcm: FakeFcm,
    credentials_path: Path,
    sender: FcmSender,
) -> None:
    user = await add_user(conn, ["token-1", "token-2"])
    finished = await finish_row(conn, db, user)
    # The first replica writes the notification row, then waits for its OAuth token: killed there.
    fcm.token_gate = asyncio.Event()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_REPLICA, db_url, str(credentials_path), fcm.base_url, cwd=REPO
    )
    try:
        await asyncio.wait_for(fcm.token_requests_arrived.wait(), timeout=30)
    finally:
        process.kill()
        await asyncio.wait_for(process.wait(), timeout=10)
    fcm.token_gate.set()

    assert len(await notifications(conn, finished.model_id)) == 1
    state = await job(conn, finished.model_id)
    assert state["notification_written_at"] is not None and state["push_sent_at"] is None
    assert state["push_owner"] is not None  # the dead replica's claim
    assert fcm.requests == []

    notifier = PushNotifier(PushStore(db.pg), sender, TEXTS, NO_WAIT)
    assert await notifier.sweep() == 0  # the dead replica's lease has not run out yet
    await notifier.model_finished(finished)  # nor does a late duplicate call take it
    assert fcm.requests == []
    # Its lease runs out (as time would have it).
    await conn.execute(
        "UPDATE listener.jobs SET push_lease_expires_at = now() WHERE model_id = $1", finished.model_id
    )
    assert await notifier.sweep() == 1
    assert await notifier.sweep() == 0
    await notifier.model_finished(finished)

    assert sorted(r.token for r in fcm.requests) == ["token-1", "token-2"]
    assert len(fcm.delivered) == 2
    assert len(await notifications(conn, finished.model_id)) == 1
    assert (await job(conn, finished.model_id))["push_result"] == "sent"


async def test_replicas_racing_for_the_same_rows_tell_each_owner_once(
    conn: asyncpg.Connection, db: PgJobStore, fcm: FakeFcm, sender: FcmSender, credentials_path: Path
) -> None:
    other_sender = FcmSender.from_credentials(credentials_path, fcm.base_url)
    try:
        replicas = [PushNotifier(PushStore(db.pg), s, TEXTS, NO_WAIT) for s in (sender, other_sender)]
        user = await add_user(conn, ["token-1", "token-2"])
        rows = [await finish_row(conn, db, user, model_name=f"M{i}") for i in range(5)]
        calls = [r.model_finished(f) for f in rows for r in replicas] + [r.sweep() for r in replicas]
        await asyncio.gather(*calls)
    finally:
        await other_sender.aclose()

    assert len(fcm.delivered) == 2 * len(rows)
    sent = {(r.token, r.body["message"]["data"]["related_id"]) for r in fcm.delivered}
    assert len(sent) == 2 * len(rows)
    for finished in rows:
        assert len(await notifications(conn, finished.model_id)) == 1


async def test_an_owner_retry_starts_the_push_afresh(
    conn: asyncpg.Connection, db: PgJobStore, fcm: FakeFcm, sender: FcmSender
) -> None:
    user = await add_user(conn, ["token-1"])
    failed = await finish_row(conn, db, user, reason="upstream error")
    notifier = PushNotifier(PushStore(db.pg), sender, TEXTS, NO_WAIT)
    await notifier.model_finished(failed)
    async with as_app_user(conn, user):
        await conn.execute(
            "UPDATE public.ai_generated_models SET status = 'pending' WHERE id = $1", failed.model_id
        )
    state = await job(conn, failed.model_id)
    assert (state["push_sent_at"], state["push_result"], state["push_attempts"]) == (None, None, 0)

    await conn.execute(
        "UPDATE listener.jobs SET lease_owner = $2, lease_expires_at = now() + interval '1 minute' "
        "WHERE model_id = $1",
        failed.model_id,
        OWNER,
    )
    results = CompletedColumns("p.glb", "https://cdn/p.glb", 1, None, None, None, None, {})
    completed = await db.complete(failed.model_id, OWNER, results)
    assert completed is not None
    await notifier.model_finished(completed)
    types = [
        r["type"]
        for r in await conn.fetch(
            "SELECT type FROM public.notifications WHERE related_id = $1 ORDER BY created_at",
            str(failed.model_id),
        )
    ]
    assert types == ["ai_model_failed", "ai_model_complete"]
    assert [r.body["message"]["data"]["type"] for r in fcm.delivered] == types


# -- configuration ----------------------------------------------------------------------


def test_texts_come_from_the_environment_and_a_bad_template_is_named() -> None:
    texts = NotificationTexts.from_env(
        {"LISTENER_PUSH_COMPLETE_TITLE": "Done", "LISTENER_PUSH_FAILED_BODY_EN": "{model_name}: {reason}"}
    )
    assert texts.render("completed", "Boat", None).title == "Done"
    assert texts.render("failed", "Boat", "too big").message_en == "Boat: too big"
    assert texts.render("failed", "Boat", None).message_en == "Boat: unknown error"
    assert NotificationTexts.from_env({}) == NotificationTexts()
    with pytest.raises(ConfigError, match="LISTENER_PUSH_COMPLETE_BODY"):
        NotificationTexts.from_env({"LISTENER_PUSH_COMPLETE_BODY": "{name} is ready"})


async def test_private_key_and_access_token_never_reach_a_log_line(
    conn: asyncpg.Connection, db: PgJobStore, fcm: FakeFcm, sender: FcmSender, credentials_path: Path
) -> None:
    """A push logged at DEBUG, every library's records included, FCM quoting the token in its error."""
    fcm.always = (403, None, "The caller does not have permission")
    fcm.echo_authorization = True
    user = await add_user(conn, ["token-1"])
    finished = await finish_row(conn, db, user)
    log_lines = JsonLines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(log_lines)
    root.setLevel(logging.DEBUG)
    try:
        await PushNotifier(PushStore(db.pg), sender, TEXTS, NO_WAIT).model_finished(finished)
    finally:
        root.removeHandler(log_lines)
        root.setLevel(level)
    info = json.loads(await asyncio.to_thread(credentials_path.read_text))
    [access_token] = fcm.issued
    pem_line = info["private_key"].splitlines()[1]  # one line of the key's body
    secrets = [info["private_key"], json.dumps(info["private_key"])[1:-1], pem_line, access_token]
    # The log said what happened, and the access token did reach a log call (in FCM's words)...
    assert any('"push_config_error"' in line for line in log_lines.lines)
    assert any(access_token in raw for raw in log_lines.raw)
    # ...yet no line written carries a secret.
    assert [s for s in secrets if any(s in line for line in log_lines.lines)] == []
    assert (await job(conn, finished.model_id))["push_result"] == "config_error"


async def test_a_bad_credentials_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({"type": "service_account", "project_id": "p"}))
    with pytest.raises(ConfigError, match="private_key"):
        FcmSender.from_credentials(path, None)
    with pytest.raises(ConfigError, match="readable"):
        FcmSender.from_credentials(tmp_path / "missing.json", None)


async def test_a_firebase_admin_that_breaks_inside_is_a_configuration_error_told_once(
    conn: asyncpg.Connection,
    db: PgJobStore,
    fcm: FakeFcm,
    sender: FcmSender,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A release of firebase-admin that moved its internals: no crash, no token lost, one loud line."""
    from firebase_admin import messaging

    async def moved(*_: object, **__: object) -> None:
        raise TypeError("send_each_async() got an unexpected keyword argument 'app'")

    monkeypatch.setattr(messaging, "send_each_async", moved)
    user = await add_user(conn, ["token-1"])
    notifier = PushNotifier(PushStore(db.pg), sender, TEXTS, NO_WAIT)
    rows = [await finish_row(conn, db, user, model_name=name) for name in ("A", "B")]
    for finished in rows:
        await notifier.model_finished(finished)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [(r.getMessage(), r.code) for r in errors] == [("push_config_error", "SDK")]  # type: ignore[attr-defined]
    assert [(await job(conn, f.model_id))["push_result"] for f in rows] == ["config_error", "config_error"]
    assert await conn.fetchval(
        "SELECT is_active FROM public.user_device_tokens WHERE device_token = 'token-1'"
    )
