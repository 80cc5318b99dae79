"""Two small pieces of the core on their own: whether a neighbour can be used, and what an image really is."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from listener.core.availability import Availability
from listener.core.images import image_type


async def test_a_problem_makes_a_neighbour_unusable_and_waiters_go_on_once_it_is_cleared() -> None:
    ai = Availability()
    assert ai.usable and ai.set_problem("the AI server refuses connections")
    assert not ai.usable and not ai.set_problem("still refusing")  # no change in usability
    waiting = asyncio.create_task(ai.wait_usable())
    await asyncio.sleep(0)
    assert not waiting.done()
    assert ai.set_problem(None) and ai.usable
    await asyncio.wait_for(waiting, 1)


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 8, "image/png"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 8, "image/jpeg"),
        (b"RIFF\0\0\0\0WEBPVP8 ", "image/webp"),
        (b"GIF89a" + b"\0" * 8, None),
        (b"<svg xmlns=", None),
        (b"", None),
    ],
)
def test_an_image_is_known_by_its_first_bytes_not_its_name(
    tmp_path: Path, head: bytes, kind: str | None
) -> None:
    lying = tmp_path / "picture.png"
    lying.write_bytes(head)
    assert image_type(lying) == kind
