"""What an app user writes in rows is refused plainly by the database or ended plainly by the listener."""

from __future__ import annotations

import json
import math
import uuid

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from listener.redact import printable
from tests.support.database import as_app_user
from tests.support.stack import Stack, running_listener, wait_for_status

NASTY = st.sampled_from(
    [
        "'; DROP TABLE public.ai_generated_models; --",
        "$(rm -rf /) `reboot` && echo pwned | sh",
        "../../../../etc/passwd",
        "%00%0d%0aSet-Cookie: x",
        "\x1b[2J\x1b[Hfake",
        "\u202eevil\u2066",
        "{{7*7}} ${7*7} %s %n",
        "é" * 601,
        "🐉" * 50,
    ]
)
TEXT = st.one_of(st.none(), st.text(max_size=40), st.text(max_size=2100), NASTY)
URLS = st.one_of(
    st.none(),
    TEXT,
    st.sampled_from(
        [
            "http://169.254.169.254/latest/meta-data/x.png",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "https://user:pw@images.example.com/a.png",
            "someone/source-images/a.png",
            "/../../a.png",
            "https://images.example.com/" + "a" * 3000 + ".png",
        ]
    ),
)
NUMBERS = st.one_of(
    st.none(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
)
ROW = st.fixed_dictionaries(
    {
        "generation_type": st.sampled_from(["text_to_3d", "image_to_3d", "text_to_image"]),
        "prompt": TEXT,
        "source_image_url": URLS,
        "art_style": TEXT,
        "symmetry_mode": st.one_of(st.sampled_from(["off", "auto", "on", "ON", ""]), TEXT),
        "target_polycount": NUMBERS,
        "model_name": st.one_of(st.text(min_size=1, max_size=250), NASTY),
    }
)
INSERT = """
    INSERT INTO public.ai_generated_models
        (user_id, generation_type, prompt, source_image_url, art_style, symmetry_mode,
         target_polycount, model_name, storage_path, status)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '', 'pending')
    RETURNING id
"""


def numeric(value: object) -> object:
    """What a frontend can send for a numeric column (Postgres numeric has NaN, not infinity)."""
    if isinstance(value, float) and math.isinf(value):
        return None
    return value


@settings(
    max_examples=3,
    deadline=None,
    database=None,  # examples come from the seed alone: the run does not depend on an earlier one
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(rows=st.lists(ROW, min_size=15, max_size=15))
async def test_every_accepted_row_ends_with_a_readable_reason_and_the_listener_keeps_serving(
    stack: Stack, rows: list[dict[str, object]]
) -> None:
    conn = await asyncpg.connect(stack.db_url)
    accepted: list[uuid.UUID] = []
    refused: list[str] = []
    try:
        async with running_listener(stack.settings(LISTENER_SOURCE_HOSTS="images.example.com")):
            for row in rows:
                owner = uuid.uuid4()
                values = [
                    row["generation_type"],
                    row["prompt"],
                    row["source_image_url"],
                    row["art_style"],
                    row["symmetry_mode"],
                    numeric(row["target_polycount"]),
                    row["model_name"],
                ]
                try:
                    async with as_app_user(conn, owner):
                        accepted.append(await conn.fetchval(INSERT, owner, *values))
                except (asyncpg.PostgresError, asyncpg.DataError, ValueError, OverflowError) as exc:
                    refused.append(str(exc))  # refused plainly by the database or the driver
            good_owner = uuid.uuid4()
            async with as_app_user(conn, good_owner):
                good = await conn.fetchval(
                    INSERT, good_owner, "text_to_3d", "a small wooden boat", None, None, None, None, "Boat"
                )
            ended = await wait_for_status(conn, [*accepted, good], timeout_s=60)
    finally:
        await conn.close()
    assert all(reason.strip() for reason in refused)
    assert ended[good]["status"] == "completed"  # the listener kept serving
    for model_id in accepted:
        ended_row = ended[model_id]
        assert ended_row["status"] in ("completed", "failed"), dict(ended_row)
        if ended_row["status"] == "failed":
            reason = ended_row["error_message"]
            assert reason and reason.endswith(".") and len(reason) < 600, reason
            assert printable(reason) == reason  # no control characters reach the app
            assert "Traceback" not in reason and "unexpected error" not in reason, reason
        else:
            assert ended_row["download_url"] and json.loads(ended_row["generation_metadata"])["ai_task_id"]
