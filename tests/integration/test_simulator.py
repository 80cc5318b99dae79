"""The AI server simulator over real HTTP: the API the listener speaks, quirks included."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from listener.playground.sample_files import build_glb
from listener.playground.simulator import AISimulator, SimulatorConfig, serve_forever

SUBMIT = "/v1/process/modelling?async_mode=true"
COMMON: dict[str, Any] = {
    "output": {"format": "glb", "unit": "mm", "scale": 1},
    "printer": {"device_uuid": None, "auto_slice": False, "print": False},
    "metadata": {"source": "listener"},
}
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELED"}


def text_job(prompt: str = "a small red teapot") -> dict[str, Any]:
    return {"task": "text_to_3d", "prompt": prompt, "art_style": "realistic", **COMMON}


def parse_glb(data: bytes) -> dict[str, Any]:
    """Check the binary glTF framing and return its JSON chunk."""
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    assert (magic, version, length) == (b"glTF", 2, len(data))
    json_len, json_type = struct.unpack_from("<I4s", data, 12)
    assert json_type == b"JSON" and json_len % 4 == 0
    gltf: dict[str, Any] = json.loads(data[20 : 20 + json_len])
    bin_len, bin_type = struct.unpack_from("<I4s", data, 20 + json_len)
    assert bin_type == b"BIN\x00" and 28 + json_len + bin_len == len(data)
    assert gltf["asset"]["version"] == "2.0"
    assert gltf["buffers"][0]["byteLength"] <= bin_len
    assert gltf["accessors"][0]["count"] == 3
    return gltf


@pytest.fixture
def config() -> SimulatorConfig:
    return SimulatorConfig(duration_s=0.3, file_ttl_after_serve_s=0.2)


@pytest.fixture
async def sim(config: SimulatorConfig) -> AsyncIterator[AISimulator]:
    simulator = AISimulator(config)
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def submit(http: aiohttp.ClientSession, sim: AISimulator, job: dict[str, Any]) -> str:
    async with http.post(sim.base_url + SUBMIT, json=job) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["status"] == "ok"
    assert body["data"]["status"] == "PENDING" and body["data"]["progress"] == 0
    task_id: str = body["data"]["task_id"]
    return task_id


async def poll(http: aiohttp.ClientSession, sim: AISimulator, task_id: str) -> dict[str, Any]:
    async with http.get(f"{sim.base_url}/v1/process/modelling/{task_id}") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["status"] == "ok"
    data: dict[str, Any] = body["data"]
    return data


async def poll_to_end(http: aiohttp.ClientSession, sim: AISimulator, task_id: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while not seen or seen[-1]["status"] not in TERMINAL:
            seen.append(await poll(http, sim, task_id))
            await asyncio.sleep(0.01)
    return seen


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with http.get(url) as resp:
        return resp.status, await resp.read()


async def test_text_task_succeeds_and_its_files_are_valid(
    sim: AISimulator, http: aiohttp.ClientSession
) -> None:
    task_id = await submit(http, sim, text_job())
    seen = await poll_to_end(http, sim, task_id)
    statuses = [data["status"] for data in seen]
    assert statuses[0] == "PENDING" and "IN_PROGRESS" in statuses and statuses[-1] == "SUCCEEDED"
    assert all(0 <= data["progress"] <= 100 for data in seen)
    done = seen[-1]
    assert done["progress"] == 100
    assert done["glb_download_url"].startswith(sim.base_url + "/files/")
    assert done["download_url"] == done["glb_download_url"]
    assert set(done["dimensions"]) == {"x", "y", "z"}
    assert done["raw"]["id"] == task_id and done["raw"]["status"] == "SUCCEEDED"

    status, glb = await fetch(http, done["glb_download_url"])
    assert status == 200 and glb == sim.produced[task_id]["glb"]
    parse_glb(glb)
    assert done["glb_file_size"] == len(glb)
    status, stl = await fetch(http, done["stl_download_url"])
    assert status == 200 and stl == sim.produced[task_id]["stl"]
    assert len(stl) == 84 + 50 * struct.unpack_from("<I", stl, 80)[0] == done["stl_file_size"]
    status, png = await fetch(http, done["thumbnail_download_url"])
    assert status == 200 and png.startswith(b"\x89PNG\r\n\x1a\n")
    assert sim.polls[task_id] == len(seen)
    assert sim.submissions[0].task_type == "text_to_3d"
    assert sim.submissions[0].fields["prompt"] == "a small red teapot"


async def test_progress_dips_only_when_enabled(sim: AISimulator, http: aiohttp.ClientSession) -> None:
    sim.config.duration_s = 0.6
    for dips in (True, False):
        sim.config.progress_dips = dips
        seen = await poll_to_end(http, sim, await submit(http, sim, text_job()))
        values = [data["progress"] for data in seen if data["status"] == "IN_PROGRESS"]
        went_down = any(later < earlier for earlier, later in itertools.pairwise(values))
        assert went_down is dips


async def test_file_is_served_once_and_a_new_poll_regenerates_it(
    sim: AISimulator, http: aiohttp.ClientSession
) -> None:
    task_id = await submit(http, sim, text_job())
    done = (await poll_to_end(http, sim, task_id))[-1]
    first_url = done["glb_download_url"]
    assert (await fetch(http, first_url))[0] == 200
    await asyncio.sleep(0.4)
    assert (await fetch(http, first_url))[0] == 404
    first_name = first_url.rsplit("/", 1)[1]
    assert sim.file_fetches[first_name] == 2
    # thumbnails are not deleted after serving
    assert (await fetch(http, done["thumbnail_download_url"]))[0] == 200
    await asyncio.sleep(0.4)
    assert (await fetch(http, done["thumbnail_download_url"]))[0] == 200

    again = await poll(http, sim, task_id)
    assert again["status"] == "SUCCEEDED"
    assert again["glb_download_url"] != first_url
    status, glb = await fetch(http, again["glb_download_url"])
    assert status == 200 and glb == sim.produced[task_id]["glb"]
    parse_glb(glb)


async def test_image_task_is_submitted_as_multipart_and_recorded(
    sim: AISimulator, http: aiohttp.ClientSession
) -> None:
    form = aiohttp.FormData()
    form.add_field("task", "image_to_3d")
    form.add_field("image_file", b"\x89PNG fake", filename="cat.png", content_type="image/png")
    form.add_field("json", json.dumps({"symmetry_mode": "auto", **COMMON}))
    async with http.post(sim.base_url + SUBMIT, data=form) as resp:
        assert resp.status == 200
        task_id = (await resp.json())["data"]["task_id"]
    [recorded] = sim.submissions
    assert recorded.task_id == task_id and recorded.task_type == "image_to_3d"
    assert recorded.image_bytes == b"\x89PNG fake"
    assert recorded.image_filename == "cat.png"
    assert recorded.image_content_type == "image/png"
    assert recorded.fields["symmetry_mode"] == "auto"
    assert not recorded.has_authorization and not recorded.has_metadata_user_id
    assert (await poll_to_end(http, sim, task_id))[-1]["status"] == "SUCCEEDED"


async def test_fail_marker_in_image_metadata_fails_the_task(
    sim: AISimulator, http: aiohttp.ClientSession
) -> None:
    form = aiohttp.FormData()
    form.add_field("task", "image_to_3d")
    form.add_field("image_file", b"jpeg bytes", filename="dog.jpg", content_type="image/jpeg")
    metadata = {"source": "listener", "model_name": "dog [fail]"}
    form.add_field("json", json.dumps(COMMON | {"metadata": metadata}))
    async with http.post(sim.base_url + SUBMIT, data=form) as resp:
        task_id = (await resp.json())["data"]["task_id"]
    end = (await poll_to_end(http, sim, task_id))[-1]
    assert end["status"] == "FAILED" and end["raw"]["task_error"]["message"]


async def test_user_identity_in_a_submission_is_recorded(
    sim: AISimulator, http: aiohttp.ClientSession
) -> None:
    job = text_job() | {"metadata": {"source": "app", "user_id": "u-1"}}
    headers = {"Authorization": "Bearer token"}
    async with http.post(sim.base_url + SUBMIT, json=job, headers=headers) as resp:
        assert resp.status == 200
    [recorded] = sim.submissions
    assert recorded.has_authorization and recorded.has_metadata_user_id


@pytest.mark.parametrize(
    "job",
    [
        {k: v for k, v in text_job().items() if k != "output"},
        {k: v for k, v in text_job().items() if k != "metadata"},
        text_job(prompt="  "),
    ],
    ids=["no-output", "no-metadata", "empty-prompt"],
)
async def test_bad_text_submission_is_400(
    sim: AISimulator, http: aiohttp.ClientSession, job: dict[str, Any]
) -> None:
    async with http.post(sim.base_url + SUBMIT, json=job) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert body["status"] == "error" and body["error"]
    assert sim.submissions == []


async def test_image_submission_without_image_is_400(sim: AISimulator, http: aiohttp.ClientSession) -> None:
    form = aiohttp.FormData()
    form.add_field("task", "image_to_3d")
    form.add_field("image_file", b"", filename="empty.png", content_type="image/png")
    form.add_field("json", json.dumps(COMMON))
    async with http.post(sim.base_url + SUBMIT, data=form) as resp:
        assert resp.status == 400
    assert sim.submissions == []


async def test_unknown_task_is_500_with_the_exact_envelope(
    sim: AISimulator, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{sim.base_url}/v1/process/modelling/no-such-task") as resp:
        assert resp.status == 500
        assert await resp.json() == {"status": "error", "error": "Internal server error"}


@pytest.mark.parametrize(("marker", "outcome"), [("[fail]", "FAILED"), ("[cancel]", "CANCELED")])
async def test_prompt_marker_chooses_the_outcome(
    sim: AISimulator, http: aiohttp.ClientSession, marker: str, outcome: str
) -> None:
    task_id = await submit(http, sim, text_job(f"a teapot {marker}"))
    end = (await poll_to_end(http, sim, task_id))[-1]
    assert end["status"] == outcome
    assert "glb_download_url" not in end
    message = end["raw"]["task_error"]["message"]
    if outcome == "FAILED":
        assert message == "The prompt was rejected by the content filter."
    else:
        assert message == ""


async def test_forced_outcome_applies_to_every_task(sim: AISimulator, http: aiohttp.ClientSession) -> None:
    sim.config.force_outcome = "FAILED"
    task_id = await submit(http, sim, text_job())
    assert (await poll_to_end(http, sim, task_id))[-1]["status"] == "FAILED"


async def test_relative_urls_and_top_level_task_id(sim: AISimulator, http: aiohttp.ClientSession) -> None:
    sim.config.relative_urls = True
    sim.config.legacy_task_id_top_level = True
    async with http.post(sim.base_url + SUBMIT, json=text_job()) as resp:
        body = await resp.json()
    assert "task_id" not in body["data"] and body["data"]["status"] == "PENDING"
    task_id = body["task_id"]
    done = (await poll_to_end(http, sim, task_id))[-1]
    assert done["glb_download_url"].startswith("/files/")
    status, glb = await fetch(http, sim.base_url + done["glb_download_url"])
    assert status == 200 and glb == sim.produced[task_id]["glb"]


async def test_injected_poll_failures(sim: AISimulator, http: aiohttp.ClientSession) -> None:
    task_id = await submit(http, sim, text_job())
    url = f"{sim.base_url}/v1/process/modelling/{task_id}"
    sim.config.fail_polls_next_n = 2
    for _ in range(2):
        async with http.get(url) as resp:
            assert resp.status == 503
    # aiohttp retries an idempotent request once when the server drops it: drop two.
    sim.config.fail_polls_next_n = 2
    sim.config.poll_drop_connection = True
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with http.get(url) as resp:
            await resp.read()
    assert (await poll(http, sim, task_id))["task_id"] == task_id
    assert sim.polls[task_id] == 5


async def test_injected_submit_failures_and_down(sim: AISimulator, http: aiohttp.ClientSession) -> None:
    sim.config.fail_submits_next_n = 1
    sim.config.submit_error_status = 504
    async with http.post(sim.base_url + SUBMIT, json=text_job()) as resp:
        assert resp.status == 504
        assert (await resp.json())["status"] == "error"
    task_id = await submit(http, sim, text_job())
    assert [s.task_id for s in sim.submissions] == [task_id]

    sim.config.down = True
    async with http.get(f"{sim.base_url}/v1/process/modelling/{task_id}") as resp:
        assert resp.status == 503
    async with http.post(sim.base_url + SUBMIT, json=text_job()) as resp:
        assert resp.status == 503
    sim.config.down = False
    assert (await poll(http, sim, task_id))["task_id"] == task_id


@pytest.mark.parametrize("knob", ["bad_glb", "truncated_glb"])
async def test_broken_glb_knobs(sim: AISimulator, http: aiohttp.ClientSession, knob: str) -> None:
    setattr(sim.config, knob, True)
    task_id = await submit(http, sim, text_job())
    done = (await poll_to_end(http, sim, task_id))[-1]
    status, body = await fetch(http, done["glb_download_url"])
    assert status == 200 and body == sim.produced[task_id]["glb"]
    with pytest.raises((AssertionError, struct.error)):
        parse_glb(body)


async def test_slow_success_poll_still_answers(sim: AISimulator, http: aiohttp.ClientSession) -> None:
    sim.config.success_poll_delay_s = 0.2
    sim.config.stl_enabled = False
    sim.config.thumbnail_enabled = False
    task_id = await submit(http, sim, text_job())
    done = (await poll_to_end(http, sim, task_id))[-1]
    assert done["status"] == "SUCCEEDED"
    assert "stl_download_url" not in done and "thumbnail_download_url" not in done
    assert set(sim.produced[task_id]) == {"glb"}


def test_build_glb_is_deterministic_and_sized() -> None:
    big = build_glb(1_000_000, b"task-1")
    assert len(big) == 1_000_000
    parse_glb(big)
    assert big == build_glb(1_000_000, b"task-1") != build_glb(1_000_000, b"task-2")
    assert len(parse_glb(build_glb(0, b"tiny"))["buffers"]) == 1


async def test_serve_forever_answers_until_cancelled(http: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = asyncio.create_task(serve_forever("127.0.0.1", port, SimulatorConfig()))
    url = f"http://127.0.0.1:{port}/v1/process/modelling/nothing"
    try:
        async with asyncio.timeout(5):
            while True:
                try:
                    async with http.get(url) as resp:
                        assert resp.status == 500
                        break
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.02)
    finally:
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
