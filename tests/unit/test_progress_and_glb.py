"""Progress mapping and throttling; GLB checks."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from listener.core.glb import verify_glb
from listener.core.progress import ProgressReporter, from_ai_progress
from listener.errors import PermanentError
from listener.playground.sample_files import build_glb


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0), (50.0, 45), (99.9, 89), (100, 90), (150, 90), (-3, 0), (None, 0), ("abc", 0), (float("nan"), 0)],
)
def test_ai_progress_maps_onto_0_to_90(value: object, expected: int) -> None:
    assert from_ai_progress(value) == expected


async def test_progress_never_goes_back_and_is_written_at_most_once_per_interval() -> None:
    now = [0.0]
    written: list[int] = []

    async def write(value: int) -> None:
        written.append(value)

    reporter = ProgressReporter(write, start=0, interval_s=2.0, clock=lambda: now[0])
    for t, value in [(0.0, 10), (0.5, 20), (1.0, 15), (2.1, 18), (2.2, 30), (4.5, 25), (6.0, 40)]:
        now[0] = t
        await reporter.report(value)
    assert written == [10, 20, 30]
    await reporter.report(93, force=True)
    assert written[-1] == 93
    await reporter.report(150, force=True)
    assert written[-1] == 99  # 100 is the completing statement's alone


def test_a_valid_glb_passes(tmp_path: Path) -> None:
    path = tmp_path / "m.glb"
    path.write_bytes(build_glb(4096, b"seed"))
    verify_glb(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"<html>not found</html>", "not a GLB"),
        (b"glTF", "not a GLB"),
        (struct.pack("<4sII", b"glTF", 1, 12), "version 1"),
        (struct.pack("<4sII", b"glTF", 2, 5000) + b"\0" * 100, "112 bytes of the 5000 it declares"),
    ],
)
def test_broken_glbs_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "m.glb"
    path.write_bytes(content)
    with pytest.raises(PermanentError, match=message):
        verify_glb(path)
