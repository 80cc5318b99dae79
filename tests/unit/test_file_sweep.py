"""The file sweep removes what a cancelled row may have left, and keeps its mark while Storage is away."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from listener.core.data import ResultPaths
from listener.core.file_sweep import ROWS_PER_SWEEP, CancelledFilesSweep
from listener.errors import TransientError
from tests.unit.fakes import FakeObjectStore


class MarkedRows:
    """The rows the database marked, as the sweep's ledger."""

    def __init__(self, rows: list[tuple[uuid.UUID, uuid.UUID]]) -> None:
        self.marked = list(rows)

    async def files_to_remove(self, most: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
        return self.marked[:most]

    async def files_removed(self, model_ids: Sequence[uuid.UUID]) -> None:
        self.marked = [row for row in self.marked if row[0] not in model_ids]


class StorageAway(FakeObjectStore):
    async def delete(self, path: str) -> None:
        raise TransientError("Storage answered HTTP 503")


def rows(count: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    return [(uuid.uuid4(), uuid.uuid4()) for _ in range(count)]


async def test_each_marked_rows_three_files_are_removed_and_its_mark_cleared() -> None:
    ledger, storage = MarkedRows(rows(2)), FakeObjectStore()
    (model_id, user_id), _ = ledger.marked
    assert await CancelledFilesSweep(ledger, storage).sweep_once() == 2
    paths = ResultPaths.of(user_id, model_id)
    assert [paths.glb, paths.stl, paths.thumbnail] == storage.deleted[:3]
    assert len(storage.deleted) == 6 and ledger.marked == []


async def test_a_look_handles_a_bounded_number_of_rows_and_the_next_look_the_rest() -> None:
    ledger = MarkedRows(rows(ROWS_PER_SWEEP + 3))
    sweep = CancelledFilesSweep(ledger, FakeObjectStore())
    assert [await sweep.sweep_once() for _ in range(3)] == [ROWS_PER_SWEEP, 3, 0]


async def test_while_storage_is_away_the_marks_stay_for_the_next_look() -> None:
    ledger = MarkedRows(rows(2))
    assert await CancelledFilesSweep(ledger, StorageAway()).sweep_once() == 0
    assert len(ledger.marked) == 2
