"""A push's claim: kept while its attempt runs, soon over when its replica dies, kept across an outage."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import asyncpg
import pytest

from listener.adapters.fcm import FcmSender
from listener.adapters.postgres.jobs import PgJobStore
from listener.adapters.postgres.push_store import PushStore
from listener.core.data import CompletedColumns, FinishedRow
from listener.notify.notifier import PushNotifier
from listener.notify.texts import NotificationTexts
from listener.retry import RetryPolicy
from tests.support.database import insert_model
from tests.support.fake_fcm import FakeFcm
from tests.support.link_proxy import LinkProxy

NO_WAIT = RetryPolicy(deadline_s=30.0, max_attempts=3).scaled(0)
TEXTS = NotificationTexts()
OWNER = "test-replica"
TOKENS = ("token-1", "token-2")


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(db_url)
    try:
        yield connection
    finally:
        await connection.close()


@asynccontextmanager
async def behind_a_link(
    db_url: str, conn: asyncpg.Connection
) -> AsyncIterator[tuple[LinkProxy, FinishedRow, PgJobStore]]:
    """A finished row, and a job store (PgJobStore) that reaches Postgres through a link the test can cut."""
    port = urlsplit(db_url).port
    assert port is not None
    link = LinkProxy(port)
    await link.start()
    try:
        async with PgJobStore.connect(db_url) as direct:
            finished = await finished_row(conn, direct)
        through = urlsplit(db_url)._replace(netloc=f"postgres@127.0.0.1:{link.port}").geturl()
        async with PgJobStore.connect(through) as db:
            yield link, finished, db
    finally:
        await link.stop()


async def finished_row(conn: asyncpg.Connection, db: PgJobStore) -> FinishedRow:
    """A completed row of a user with two live device tokens, ended by the listener's own statement."""
    user = uuid.uuid4()
    for token in TOKENS:
        await conn.execute(
            "INSERT INTO public.user_device_tokens (user_id, device_token, platform) "
            "VALUES ($1, $2, 'android')",
            user,
            token,
        )
    model_id = await insert_model(conn, user)
    await conn.execute(
        "UPDATE listener.jobs SET lease_owner = $2, lease_expires_at = now() + interval '1 minute' "
        "WHERE model_id = $1",
        model_id,
        OWNER,
    )
    results = CompletedColumns(
        f"{user}/generated-models/{model_id}.glb", "https://cdn/m.glb", 10, None, None, None, None, {}
    )
    finished = await db.complete(model_id, OWNER, results)
    assert finished is not None
    return finished


async def push_state(conn: asyncpg.Connection, model_id: uuid.UUID) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT push_result, push_sent_at, push_owner, "
        "extract(epoch FROM push_lease_expires_at - now())::float8 AS lease_left_s "
        "FROM listener.jobs WHERE model_id = $1",
        model_id,
    )
    assert row is not None
    return row


async def test_an_attempt_that_takes_long_keeps_its_claim(
    db_url: str, conn: asyncpg.Connection, fcm: FakeFcm, sender: FcmSender
) -> None:
    """However long FCM keeps it waiting, a live attempt's claim is not taken by another replica's sweep."""
    async with PgJobStore.connect(db_url) as db:
        finished = await finished_row(conn, db)
        notifier = PushNotifier(PushStore(db.pg), sender, TEXTS, NO_WAIT, lease_s=0.4)
        other = PushNotifier(PushStore(db.pg), sender, TEXTS, NO_WAIT, lease_s=0.4)
        fcm.token_gate = asyncio.Event()  # the attempt waits for its OAuth token
        attempt = asyncio.create_task(notifier.model_finished(finished))
        await asyncio.wait_for(fcm.token_requests_arrived.wait(), timeout=10)
        await asyncio.sleep(1.5)  # several leases long
        assert await other.sweep() == 0
        fcm.token_gate.set()
        await asyncio.wait_for(attempt, timeout=10)
    assert sorted(r.token for r in fcm.delivered) == sorted(TOKENS)
    assert (await push_state(conn, finished.model_id))["push_result"] == "sent"


async def test_the_claim_of_a_replica_that_dies_runs_out_within_a_minute(
    db_url: str, conn: asyncpg.Connection, fcm: FakeFcm, sender: FcmSender
) -> None:
    """With the settings a replica runs with: its owner is not told minutes late because it died."""
    async with PgJobStore.connect(db_url) as db:
        finished = await finished_row(conn, db)
        notifier = PushNotifier(PushStore(db.pg), sender, TEXTS, RetryPolicy())
        fcm.token_gate = asyncio.Event()
        attempt = asyncio.create_task(notifier.model_finished(finished))
        await asyncio.wait_for(fcm.token_requests_arrived.wait(), timeout=10)
        state = await push_state(conn, finished.model_id)
        attempt.cancel()  # the replica dies here
        await asyncio.gather(attempt, return_exceptions=True)
        fcm.token_gate.set()
    assert state["push_owner"] is not None and state["push_sent_at"] is None
    assert 0 < state["lease_left_s"] <= 61


async def test_a_push_sent_while_the_database_is_away_is_recorded_once_it_is_back(
    db_url: str, conn: asyncpg.Connection, fcm: FakeFcm, sender: FcmSender
) -> None:
    """Given up on, the end of the push would let the sweep send the same messages again."""
    async with behind_a_link(db_url, conn) as (link, finished, db):
        notifier = PushNotifier(PushStore(db.pg), sender, TEXTS, NO_WAIT, lease_s=30)
        fcm.token_gate = asyncio.Event()
        attempt = asyncio.create_task(notifier.model_finished(finished))
        await asyncio.wait_for(fcm.token_requests_arrived.wait(), timeout=10)
        link.cut()  # the database goes away while FCM is sending
        fcm.token_gate.set()
        await asyncio.sleep(2.0)  # FCM took the messages; their end cannot be written
        assert len(fcm.delivered) == len(TOKENS)
        link.heal()
        await asyncio.wait_for(attempt, timeout=20)
    assert len(fcm.delivered) == len(TOKENS)
    state = await push_state(conn, finished.model_id)
    assert (state["push_result"], state["push_owner"]) == ("sent", None)


async def test_no_message_goes_to_fcm_while_the_database_is_away(
    db_url: str, conn: asyncpg.Connection, fcm: FakeFcm, sender: FcmSender
) -> None:
    """What FCM takes is recorded a moment later: never sent into an outage a replica may die in."""
    retry = RetryPolicy(first_wait_s=0.05, max_wait_s=0.1, deadline_s=30.0, max_attempts=100)
    async with behind_a_link(db_url, conn) as (link, finished, db):
        notifier = PushNotifier(PushStore(db.pg), sender, TEXTS, retry, lease_s=30)
        fcm.down = True  # FCM answers 503 for now: the attempt sends again and again
        attempt = asyncio.create_task(notifier.model_finished(finished))
        for _ in range(200):
            if len(fcm.requests) >= 2:
                break
            await asyncio.sleep(0.05)
        link.cut()  # the database goes away, and FCM comes back meanwhile
        # An attempt that read the claim just before the cut meets FCM still down.
        await asyncio.sleep(0.5)
        fcm.down = False
        await asyncio.sleep(1.5)
        healed_at = time.time()
        link.heal()
        await asyncio.wait_for(attempt, timeout=20)
    assert sorted(r.token for r in fcm.delivered) == sorted(TOKENS)
    assert all(r.received_at >= healed_at for r in fcm.delivered)
    assert (await push_state(conn, finished.model_id))["push_result"] == "sent"
