"""A closed phone follows its row: Live Activity updates and Android progress, through firebase-admin.

FCM is the local stand-in of tests/support/fake_fcm.py, reached by the real firebase-admin
and google-auth code; the database is the real Postgres of the tests, and the app's side
(registering a Live Activity, opting in) is done as the app user, under RLS.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from listener.adapters.fcm import FcmSender
from listener.adapters.postgres.pool import PgPool
from listener.adapters.postgres.progress_store import ProgressStore
from listener.app.service import serve
from listener.core.milestones import Milestone, Stage
from listener.notify.progress_feeds import ProgressFeeds, RowUpdate
from listener.notify.progress_pushes import ProgressPushes
from listener.notify.progress_texts import ProgressTexts
from listener.notify.texts import NotificationTexts
from tests.support.database import as_app_user, insert_model
from tests.support.fake_fcm import FakeFcm, FcmRequest
from tests.support.stack import NO_WAIT, Stack, wait_for_status
from tests.unit.fakes import claimed_job

GAP_S = 0.4  # the test's LISTENER_PROGRESS_PUSH_GAP, scaled down as its generations are
NOW = 1_780_000_000  # the wall clock of the tests that build messages one by one
SAFETY_S = 30.0  # a safety net against a hung test, never the assertion


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(db_url)
    try:
        yield connection
    finally:
        await connection.close()


async def add_owner(
    conn: asyncpg.Connection, tokens: dict[str, str], *, progress_on: bool = False
) -> uuid.UUID:
    """A user with device tokens (token: platform), who turned Android progress on or not."""
    user = uuid.uuid4()
    for token, platform in tokens.items():
        await conn.execute(
            "INSERT INTO public.user_device_tokens (user_id, device_token, platform) VALUES ($1, $2, $3)",
            user,
            token,
            platform,
        )
    async with as_app_user(conn, user):  # the app's settings screen
        await conn.execute(
            "INSERT INTO public.user_notification_settings (user_id, ai_progress_enabled) VALUES ($1, $2)",
            user,
            progress_on,
        )
    return user


async def register_live_activity(
    conn: asyncpg.Connection, user: uuid.UUID, model_id: uuid.UUID, activity: str, device: str
) -> None:
    """What the app does once it has started the row's Live Activity (supabase-js upsert)."""
    async with as_app_user(conn, user):
        await conn.execute(
            "INSERT INTO public.live_activity_tokens (model_id, user_id, activity_token, device_token) "
            "VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (model_id) DO UPDATE SET activity_token = excluded.activity_token",
            model_id,
            user,
            activity,
            device,
        )


def is_progress(request: FcmRequest) -> bool:
    message = request.body["message"]
    return "live_activity_token" in message.get("apns", {}) or (
        message.get("data", {}).get("type") == "ai_model_progress"
    )


def stage_of(request: FcmRequest) -> str:
    """The stage and progress an update says ("" for a completion push)."""
    if not is_progress(request):
        return ""
    message = request.body["message"]
    if "live_activity_token" in message.get("apns", {}):
        state = message["apns"]["payload"]["aps"]["content-state"]
        return f"{state['stage']} {state['progress']}"
    return f"{message['data']['stage']} {message['data']['progress']}"


# -- the whole listener -------------------------------------------------------------------


async def test_a_closed_phone_follows_its_row_in_a_few_paced_updates_and_others_get_nothing_extra(
    stack: Stack, fcm: FakeFcm, tmp_path: Path
) -> None:
    stack.simulator.config.duration_s = 4.0
    stack.simulator.config.progress_dips = False
    credentials = fcm.write_credentials(tmp_path / "sa.json")
    settings = dataclasses.replace(
        stack.settings(FIREBASE_CREDENTIALS=str(credentials), FCM_ENDPOINT=fcm.base_url),
        progress_push_gap_s=GAP_S,
    )
    conn = await asyncpg.connect(stack.db_url)
    try:
        follower = await add_owner(conn, {"android-1": "android", "iphone-1": "ios"}, progress_on=True)
        bystander = await add_owner(conn, {"android-2": "android", "iphone-2": "ios"})
        async with as_app_user(conn, follower):
            followed = await insert_model(conn, follower, model_name="Boat")
        async with as_app_user(conn, bystander):
            unfollowed = await insert_model(conn, bystander, model_name="Lamp")
        await register_live_activity(conn, follower, followed, "activity-1", "iphone-1")

        stop = asyncio.Event()
        task = asyncio.create_task(serve(settings, stop, retry=NO_WAIT, sweep_interval_s=0.5))
        try:
            rows = await wait_for_status(conn, [followed, unfollowed], timeout_s=SAFETY_S)
            async with asyncio.timeout(SAFETY_S):  # the pushes leave a moment after the status
                await fcm.wait_for(lambda got: len([r for r in got if not is_progress(r)]) == 4)
                await fcm.wait_for(
                    lambda got: len([r for r in got if stage_of(r).startswith("completed")]) == 2
                )
        finally:
            stop.set()
            await asyncio.wait_for(task, SAFETY_S)
    finally:
        await conn.close()
    assert {r["status"] for r in rows.values()} == {"completed"}

    android = [r for r in fcm.requests if r.token == "android-1" and is_progress(r)]
    iphone = [r for r in fcm.requests if r.token == "iphone-1" and is_progress(r)]
    stages = [stage_of(r) for r in android]
    # The same updates on both phones: started, a few quarters, uploading, then completed.
    assert [stage_of(r) for r in iphone] == stages
    assert stages[0] == "started 0" and stages[-2] == "uploading 93" and stages[-1] == "completed 100"
    assert all(s.startswith("generating ") for s in stages[1:-2])
    quarters = [int(s.split()[1]) // 25 for s in stages[1:-2]]
    assert quarters == sorted(set(quarters)) and set(quarters) <= {1, 2, 3}
    # No two middle updates closer than the gap (the end is never held back).
    for updates in (android, iphone):
        gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(updates[:-1])]
        assert all(gap >= GAP_S for gap in gaps), gaps
    stamps = [int(r.body["message"]["data"]["timestamp"]) for r in android]
    assert stamps == sorted(stamps)
    apns = [r.body["message"]["apns"] for r in iphone]
    assert [a["headers"]["apns-priority"] for a in apns] == ["5"] * (len(apns) - 1) + ["10"]
    assert [a["payload"]["aps"]["event"] for a in apns] == ["update"] * (len(apns) - 1) + ["end"]
    assert apns[-1]["payload"]["aps"]["content-state"]["body"] == "'Boat' 모델이 성공적으로 생성되었습니다."

    # The completion push is as it always was, one per device, and counted as the row's push.
    done = [r for r in fcm.requests if not is_progress(r)]
    assert sorted(r.token for r in done) == ["android-1", "android-2", "iphone-1", "iphone-2"]
    assert {r.body["message"]["data"]["type"] for r in done} == {"ai_model_complete"}
    # The bystander asked for nothing: their phones got the completion push and nothing more.
    assert [r for r in fcm.requests if r.token.endswith("-2") and is_progress(r)] == []


# -- each message's shape -----------------------------------------------------------------


@pytest.fixture
async def pushes(db_url: str, sender: FcmSender) -> AsyncIterator[tuple[ProgressPushes, ProgressStore]]:
    async with PgPool.connect(db_url) as pg:
        store = ProgressStore(pg)
        yield (
            ProgressPushes(store, sender, ProgressTexts(), NotificationTexts(), wall_clock=lambda: NOW),
            store,
        )


async def test_each_update_has_the_shape_each_platform_expects(
    conn: asyncpg.Connection, fcm: FakeFcm, pushes: tuple[ProgressPushes, ProgressStore]
) -> None:
    progress, _ = pushes
    user = await add_owner(conn, {"android-1": "android", "iphone-1": "ios"}, progress_on=True)
    model_id = await insert_model(conn, user, model_name="Boat")
    await register_live_activity(conn, user, model_id, "activity-1", "iphone-1")
    await progress.deliver(RowUpdate(model_id, user, "Boat", Milestone(Stage.GENERATING, 52)))
    await progress.deliver(
        RowUpdate(model_id, user, "Boat", Milestone(Stage.FAILED, 52), "too many polygons")
    )

    row = str(model_id)
    android_middle, iphone_middle, android_end, iphone_end = (r.body for r in fcm.requests)
    assert android_middle == {
        "message": {
            "token": "android-1",
            "data": {
                "type": "ai_model_progress",
                "related_id": row,
                "related_type": "ai_model",
                "stage": "generating",
                "progress": "52",
                "title": "AI 모델 생성 중",
                "body": "'Boat' 모델 생성 중: 52%",
                "body_en": "'Boat' is 52% done.",
                "timestamp": str(NOW),
            },
            "android": {"priority": "high", "collapse_key": row},
        }
    }
    assert iphone_middle == {
        "message": {
            "token": "iphone-1",
            "apns": {
                "live_activity_token": "activity-1",
                "headers": {"apns-push-type": "liveactivity", "apns-priority": "5", "apns-collapse-id": row},
                "payload": {
                    "aps": {
                        "timestamp": NOW,
                        "event": "update",
                        "content-state": {
                            "stage": "generating",
                            "progress": 52,
                            "title": "AI 모델 생성 중",
                            "body": "'Boat' 모델 생성 중: 52%",
                            "bodyEn": "'Boat' is 52% done.",
                        },
                    }
                },
            },
        }
    }
    # The end says what the completion push says: a failure with its plain reason.
    assert android_end["message"]["data"]["stage"] == "failed"
    assert android_end["message"]["data"]["body"] == "'Boat' 모델 생성에 실패했습니다: too many polygons"
    assert android_end["message"]["data"]["body_en"] == "'Boat' model could not be created: too many polygons"
    aps: dict[str, Any] = iphone_end["message"]["apns"]["payload"]["aps"]
    assert (aps["event"], iphone_end["message"]["apns"]["headers"]["apns-priority"]) == ("end", "10")
    assert aps["content-state"]["title"] == "AI 모델 생성 실패"


async def test_an_end_that_meets_fcm_unavailable_is_sent_once_more_and_a_middle_update_is_not(
    conn: asyncpg.Connection, fcm: FakeFcm, pushes: tuple[ProgressPushes, ProgressStore]
) -> None:
    progress, _ = pushes
    user = await add_owner(conn, {"android-1": "android"}, progress_on=True)
    model_id = await insert_model(conn, user, model_name="Boat")
    fcm.fail_next = [503]
    await progress.deliver(RowUpdate(model_id, user, "Boat", Milestone(Stage.GENERATING, 26)))
    fcm.fail_next = [503]
    await progress.deliver(RowUpdate(model_id, user, "Boat", Milestone(Stage.COMPLETED, 100)))
    assert [(stage_of(r), r.status) for r in fcm.requests] == [
        ("generating 26", 503),
        ("completed 100", 503),
        ("completed 100", 200),
    ]


async def test_dead_tokens_are_dropped_and_a_cancelled_row_ends_its_live_activity(
    conn: asyncpg.Connection, fcm: FakeFcm, pushes: tuple[ProgressPushes, ProgressStore]
) -> None:
    progress, store = pushes
    fcm.unregistered = {"android-dead", "iphone-dead"}
    user = await add_owner(
        conn, {"android-dead": "android", "android-1": "android", "iphone-1": "ios"}, progress_on=True
    )
    cancelled = await insert_model(conn, user, model_name="Crane")
    gone = await insert_model(conn, user, model_name="Duck")
    await register_live_activity(conn, user, cancelled, "activity-1", "iphone-1")
    await register_live_activity(conn, user, gone, "activity-2", "iphone-dead")
    await progress.deliver(RowUpdate(gone, user, "Duck", Milestone(Stage.STARTED, 0)))
    feeds = ProgressFeeds(progress.deliver, store.is_cancelled, gap_s=GAP_S)
    feeds.reached(
        claimed_job(model_id=cancelled, user_id=user, model_name="Crane"), Milestone(Stage.STARTED, 0)
    )
    async with as_app_user(conn, user):
        await conn.execute(
            "UPDATE public.ai_generated_models SET status = 'cancelled' WHERE id = $1", cancelled
        )
    feeds.ended(cancelled, None)  # its coroutine stopped: the feed finds out it was cancelled
    await feeds.aclose(grace_s=SAFETY_S)

    told = [(r.token, stage_of(r)) for r in fcm.requests if r.token in ("android-1", "iphone-1")]
    assert [t for t in told if t[0] == "iphone-1"] == [("iphone-1", "started 0"), ("iphone-1", "cancelled 0")]
    [cancel] = [r for r in fcm.requests if r.token == "iphone-1" and "cancelled" in stage_of(r)]
    assert cancel.body["message"]["apns"]["payload"]["aps"]["event"] == "end"
    # The dead Android token is switched off as the completion push would; the dead activity goes.
    tokens = await conn.fetch("SELECT device_token, is_active FROM public.user_device_tokens")
    active = {r["device_token"]: r["is_active"] for r in tokens}
    assert active == {"android-dead": False, "android-1": True, "iphone-1": True}
    activities = await conn.fetch("SELECT model_id FROM public.live_activity_tokens")
    assert [r["model_id"] for r in activities] == [cancelled]
    assert len([r for r in fcm.requests if r.token == "android-dead"]) == 1  # never sent to again


# -- the tokens' table, as the app reaches it ---------------------------------------------


async def test_an_app_user_registers_only_the_live_activity_of_their_own_rows(
    conn: asyncpg.Connection,
) -> None:
    owner, stranger = await add_owner(conn, {}), await add_owner(conn, {})
    async with as_app_user(conn, owner):
        model_id = await insert_model(conn, owner)
    await register_live_activity(conn, owner, model_id, "activity-1", "iphone-1")
    await register_live_activity(conn, owner, model_id, "activity-rotated", "iphone-1")  # iOS rotated it

    for user, claimed_owner in ((stranger, stranger), (stranger, owner)):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with as_app_user(conn, user):
                await conn.execute(
                    "INSERT INTO public.live_activity_tokens "
                    "(model_id, user_id, activity_token, device_token) VALUES ($1, $2, 'forged', 'iphone-x')",
                    model_id,
                    claimed_owner,
                )
    async with as_app_user(conn, stranger):
        assert await conn.fetch("SELECT * FROM public.live_activity_tokens") == []
        changed = await conn.execute("UPDATE public.live_activity_tokens SET activity_token = 'forged'")
        assert changed == "UPDATE 0"
    async with conn.transaction():
        await conn.execute("SET LOCAL ROLE anon")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM public.live_activity_tokens")
    async with as_app_user(conn, owner):
        [row] = await conn.fetch("SELECT activity_token FROM public.live_activity_tokens")
        assert row["activity_token"] == "activity-rotated"
    # The row goes, its token with it.
    await conn.execute("DELETE FROM public.ai_generated_models WHERE id = $1", model_id)
    assert await conn.fetchval("SELECT count(*) FROM public.live_activity_tokens") == 0
