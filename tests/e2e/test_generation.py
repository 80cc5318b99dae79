"""A pending row becomes a completed model: text and image, every column, progress as Realtime sees it."""

from __future__ import annotations

import json
import uuid

import asyncpg

from listener.core.glb import GLB_MAGIC
from tests.support.database import as_app_user, insert_model
from tests.support.realtime import RealtimeTap
from tests.support.stack import Stack, run_rows, running_listener, wait_for_status


async def test_text_and_image_requests_complete_with_every_column_right(stack: Stack) -> None:
    user = uuid.uuid4()
    source_key = f"{user}/source-images/cat.png"
    source_bytes = b"\x89PNG\r\n\x1a\n" + b"pretend image" * 10
    stack.s3.put_object(source_key, source_bytes, "image/png")
    conn = await asyncpg.connect(stack.db_url)
    tap = RealtimeTap(conn)
    await tap.open()
    try:
        async with as_app_user(conn, user):
            text_id = await insert_model(conn, user, prompt="a red wooden chair", model_name="Chair")
            image_id = await insert_model(
                conn,
                user,
                generation_type="image_to_3d",
                prompt=None,
                source_image_url=source_key,
                model_name="Cat",
            )
        async with running_listener(stack.settings()):
            rows = await wait_for_status(conn, [text_id, image_id])
        updates = await tap.updates()
    finally:
        await tap.close()
        await conn.close()

    submissions = {s.task_type: s for s in stack.simulator.submissions}
    assert set(submissions) == {"text_to_3d", "image_to_3d"}
    assert submissions["text_to_3d"].fields["prompt"] == "a red wooden chair"
    assert submissions["image_to_3d"].image_bytes == source_bytes
    assert submissions["image_to_3d"].image_filename == "cat.png"
    assert not any(s.has_authorization or s.has_metadata_user_id for s in submissions.values())

    public = f"{stack.s3.config().public_base_url}/storage/v1/object/public/ai-models"
    for model_id, kind in ((text_id, "text_to_3d"), (image_id, "image_to_3d")):
        row = rows[model_id]
        task_id = submissions[kind].task_id
        produced = stack.simulator.produced[task_id]
        glb_key = f"{user}/generated-models/{model_id}.glb"
        assert row["status"] == "completed", row["error_message"]
        assert row["progress"] == 100
        assert row["error_message"] is None
        assert row["completed_at"] is not None
        assert row["storage_path"] == glb_key
        assert row["download_url"] == f"{public}/{glb_key}"
        assert row["file_format"] == "glb"
        assert row["file_size"] == len(produced["glb"])
        assert row["stl_storage_path"] == f"{user}/generated-models/{model_id}.stl"
        assert row["stl_download_url"] == f"{public}/{user}/generated-models/{model_id}.stl"
        assert row["thumbnail_url"] == f"{public}/{user}/thumbnails/{model_id}.png"
        assert json.loads(row["model_dimensions"]) == stack.simulator.dimensions(task_id)
        assert task_id in row["generation_metadata"]

        assert stack.s3.read_object(glb_key) == produced["glb"]
        assert stack.s3.read_object(glb_key)[:4] == GLB_MAGIC
        assert stack.s3.object_info(glb_key)[1] == "model/gltf-binary"
        assert stack.s3.read_object(f"{user}/generated-models/{model_id}.stl") == produced["stl"]
        assert (
            stack.s3.object_info(f"{user}/generated-models/{model_id}.stl")[1] == "application/octet-stream"
        )
        assert stack.s3.read_object(f"{user}/thumbnails/{model_id}.png") == produced["thumbnail"]
        assert stack.s3.object_info(f"{user}/thumbnails/{model_id}.png")[1] == "image/png"

        # What Realtime streamed for this row: progress never goes back while processing,
        # and it was written far fewer times than the AI server reported it.
        seen = [u for u in updates if u["id"] == str(model_id)]
        progress = [int(u["progress"] or 0) for u in seen if u["status"] == "processing"]
        assert progress == sorted(progress)
        assert [u["status"] for u in seen][-1] == "completed"
        polls = stack.simulator.polls[task_id]
        assert len(seen) <= 10 < polls, (len(seen), polls)


async def test_older_ai_server_builds_are_understood(stack: Stack) -> None:
    """Paths instead of absolute URLs, the task id at the top level, a slow first poll after success."""
    stack.simulator.config.relative_urls = True
    stack.simulator.config.legacy_task_id_top_level = True
    stack.simulator.config.success_poll_delay_s = 1.0
    stack.simulator.config.stl_enabled = False
    stack.simulator.config.thumbnail_enabled = False
    (row,) = await run_rows(stack, [{"prompt": "a brass key"}])
    assert (row["status"], row["error_message"]) == ("completed", None)
    (submission,) = stack.simulator.submissions
    assert stack.s3.read_object(row["storage_path"]) == stack.simulator.produced[submission.task_id]["glb"]
    assert (row["stl_storage_path"], row["thumbnail_url"]) == (None, None)


async def test_a_result_file_gone_before_it_was_fetched_is_recovered_by_polling_again(stack: Stack) -> None:
    stack.simulator.config.lose_files_next_n = 1
    (row,) = await run_rows(stack, [{"prompt": "a paper lantern"}])
    assert (row["status"], row["error_message"]) == ("completed", None)
    (submission,) = stack.simulator.submissions
    glb_names = [name for name in stack.simulator.file_fetches if name.endswith(".glb")]
    assert len(glb_names) == 2  # the lost file, then the one the extra poll made anew
    assert stack.s3.read_object(row["storage_path"]) == stack.simulator.produced[submission.task_id]["glb"]
