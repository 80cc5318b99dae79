"""Lock-screen updates per row: the whole listener, a 5-minute generation on a compressed timescale.

Every duration is divided by `--scale` alike: the generation (5 minutes), the poll interval
(5 s), the progress interval (2 s) and the gap between a row's updates (20 s), so the
count of updates per row is what a real 5-minute generation would get. Each owner has one
Android phone that opted in and one iPhone with the row's Live Activity; FCM is the local
stand-in, reached through firebase-admin. The AI simulator's curve: queued for the first
fifth, then rising steadily to the end, dipping a little every fourth poll.

    python -m tests.benchmarks.lock_screen --scale 30 --rows 10
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import tempfile
import uuid
from collections import Counter
from pathlib import Path

import asyncpg

from listener.adapters.postgres.migrate import migrate
from listener.app.service import serve
from listener.app.settings import load_settings
from listener.playground.embedded import EmbeddedPostgres
from listener.playground.local_s3 import LocalS3
from listener.playground.simulator import AISimulator, SimulatorConfig
from tests.benchmarks.harness import listener_env
from tests.support.database import as_app_user, insert_model
from tests.support.fake_fcm import FakeFcm
from tests.support.stack import wait_for_status

GENERATION_S, POLL_S, PROGRESS_S, GAP_S = 300.0, 5.0, 2.0, 20.0


async def owner_with_phones(conn: asyncpg.Connection, number: int) -> tuple[uuid.UUID, uuid.UUID]:
    """A user with an opted-in Android phone and a row whose Live Activity their iPhone registered."""
    user = uuid.uuid4()
    await conn.execute(
        "INSERT INTO public.user_device_tokens (user_id, device_token, platform) VALUES "
        "($1, $2, 'android'), ($1, $3, 'ios')",
        user,
        f"android-{number}",
        f"iphone-{number}",
    )
    await conn.execute(
        "INSERT INTO public.user_notification_settings (user_id, ai_progress_enabled) VALUES ($1, true)", user
    )
    async with as_app_user(conn, user):
        model_id = await insert_model(conn, user, model_name=f"Model {number}")
        await conn.execute(
            "INSERT INTO public.live_activity_tokens (model_id, user_id, activity_token, device_token) "
            "VALUES ($1, $2, $3, $4)",
            model_id,
            user,
            f"activity-{number}",
            f"iphone-{number}",
        )
    return user, model_id


async def measure(scale: float, rows: int) -> dict[str, object]:
    """Runs `rows` generations at 1/`scale` of real time; returns the updates each device got."""
    fcm = FakeFcm()
    await fcm.start()
    simulator = AISimulator(SimulatorConfig(duration_s=GENERATION_S / scale))
    ai_url = await simulator.start()
    s3 = LocalS3()
    with EmbeddedPostgres() as pg, tempfile.TemporaryDirectory() as work:
        storage = await asyncio.to_thread(s3.start)
        try:
            conn = await asyncpg.connect(pg.dsn)
            await migrate(conn)
            ids = [(await owner_with_phones(conn, n))[1] for n in range(rows)]
            env = listener_env(
                pg.dsn,
                ai_url,
                Path(work) / "spool",
                storage,
                FIREBASE_CREDENTIALS=str(fcm.write_credentials(Path(work) / "sa.json")),
                FCM_ENDPOINT=fcm.base_url,
                LISTENER_POLL_INTERVAL=str(POLL_S / scale),
                LISTENER_PROGRESS_INTERVAL=str(PROGRESS_S / scale),
                LISTENER_LOG_FORMAT="json",
            )
            settings = dataclasses.replace(
                load_settings(env), storage=storage, progress_push_gap_s=GAP_S / scale
            )
            stop = asyncio.Event()
            task = asyncio.create_task(serve(settings, stop))
            try:
                await wait_for_status(conn, ids, timeout_s=GENERATION_S / scale * 4 + 30)
                await asyncio.sleep(1.0)  # the ends leave a moment after the status
            finally:
                stop.set()
                await asyncio.wait_for(task, 60)
            await conn.close()
        finally:
            await asyncio.to_thread(s3.stop)
            await simulator.stop()
            await fcm.stop()
    progress = [
        r
        for r in fcm.requests
        if "live_activity_token" in r.body["message"].get("apns", {})
        or r.body["message"].get("data", {}).get("type") == "ai_model_progress"
    ]
    per_device = Counter(r.token for r in progress)
    stages = Counter(
        (r.body["message"].get("data") or r.body["message"]["apns"]["payload"]["aps"]["content-state"])[
            "stage"
        ]
        for r in progress
        if r.token.startswith("android-")
    )
    counts = sorted(per_device.values())
    return {
        "scale": scale,
        "rows": rows,
        "generation_s": GENERATION_S,
        "gap_s": GAP_S,
        "updates_per_device_per_row": {
            "min": counts[0],
            "median": statistics.median(counts),
            "max": counts[-1],
        },
        "fcm_messages_per_row": len(progress) / rows,
        "android_updates_by_stage": dict(stages),
        "completion_pushes": len(fcm.requests) - len(progress),
    }


def main() -> None:
    """Prints the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=30.0, help="how many times faster than real time")
    parser.add_argument("--rows", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.scale, args.rows)), indent=2))


if __name__ == "__main__":
    main()
