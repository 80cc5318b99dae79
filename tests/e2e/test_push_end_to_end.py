"""`listener run` with FIREBASE_CREDENTIALS and FCM_ENDPOINT set: owners get their pushes, the log no secret.

FCM and Google's token endpoint are the local stand-in of tests/support/fake_fcm.py; the
service account is written with its fresh key, so the listener's own wiring runs unchanged.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import asyncpg

from tests.support.database import as_app_user, insert_model
from tests.support.fake_fcm import FakeFcm
from tests.support.stack import Stack, listener_process, wait_for_status, wait_until


async def test_a_real_listener_pushes_each_finished_row_to_its_owners_devices_once(
    stack: Stack, fcm: FakeFcm, tmp_path: Path
) -> None:
    fcm.unregistered = {"token-old-phone"}
    credentials = fcm.write_credentials(tmp_path / "service-account.json")
    log_path = tmp_path / "listener.log"
    owner = uuid.uuid4()
    conn = await asyncpg.connect(stack.db_url)
    try:
        for token in ("token-phone", "token-old-phone"):
            await conn.execute(
                "INSERT INTO public.user_device_tokens (user_id, device_token, platform) "
                "VALUES ($1, $2, 'ios')",
                owner,
                token,
            )
        async with listener_process(
            stack, log_path, FIREBASE_CREDENTIALS=str(credentials), FCM_ENDPOINT=fcm.base_url
        ):
            async with as_app_user(conn, owner):
                done = await insert_model(conn, owner, prompt="a lamp", model_name="Lamp")
                failed = await insert_model(conn, owner, prompt="a lamp [fail]", model_name="Broken")
            rows = await wait_for_status(conn, [done, failed])
            await wait_until(
                conn,
                "SELECT count(*) = 2 FROM listener.jobs "
                "WHERE model_id = ANY($1::uuid[]) AND push_sent_at IS NOT NULL",
                [done, failed],
            )
        jobs = await conn.fetch(
            "SELECT model_id, push_result FROM listener.jobs WHERE model_id = ANY($1::uuid[])", [done, failed]
        )
        notes = await conn.fetch(
            "SELECT related_id, type FROM public.notifications WHERE user_id = $1 ORDER BY related_id", owner
        )
        old_phone = await conn.fetchval(
            "SELECT is_active FROM public.user_device_tokens WHERE device_token = 'token-old-phone'"
        )
    finally:
        await conn.close()
    assert (rows[done]["status"], rows[failed]["status"]) == ("completed", "failed")
    assert {j["model_id"]: j["push_result"] for j in jobs} == {done: "sent", failed: "sent"}
    assert sorted((n["related_id"], n["type"]) for n in notes) == sorted(
        [(str(done), "ai_model_complete"), (str(failed), "ai_model_failed")]
    )
    pushed = sorted(
        (r.token, r.body["message"]["data"]["related_id"], r.body["message"]["data"]["type"])
        for r in fcm.delivered
    )
    assert pushed == sorted(
        [("token-phone", str(done), "ai_model_complete"), ("token-phone", str(failed), "ai_model_failed")]
    )
    assert old_phone is False  # FCM said it is gone: it is not sent to again

    # The log of this run: it tells of the pushes, and carries neither the key nor a token.
    log = log_path.read_text()
    events = [json.loads(line)["event"] for line in log.splitlines() if line.startswith("{")]
    assert events.count("push_sent") == 2 and "push_off" not in events
    info = json.loads(credentials.read_text())
    secrets = [
        info["private_key"],
        json.dumps(info["private_key"])[1:-1],
        info["private_key"].splitlines()[1],
        info["private_key_id"],
        *fcm.issued,
    ]
    assert fcm.issued and [s for s in secrets if s in log] == []
