"""What Supabase Realtime sees: the row changes of `supabase_realtime`, read from a pgoutput slot."""

from __future__ import annotations

import struct
import uuid

import asyncpg


def _cstring(data: bytes, at: int) -> tuple[str, int]:
    end = data.index(b"\0", at)
    return data[at:end].decode(), end + 1


def _tuple(data: bytes, at: int) -> tuple[list[str | None], int]:
    (count,) = struct.unpack_from(">h", data, at)
    at += 2
    values: list[str | None] = []
    for _ in range(count):
        kind = data[at : at + 1]
        at += 1
        if kind == b"t":
            (length,) = struct.unpack_from(">i", data, at)
            at += 4
            values.append(data[at : at + length].decode())
            at += length
        else:  # n: null, u: unchanged TOAST value
            values.append(None)
    return values, at


class RealtimeTap:
    """A logical replication slot on the Realtime publication; yields updated rows as dicts."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.slot = f"tap_{uuid.uuid4().hex[:10]}"
        self._columns: dict[int, list[str]] = {}

    async def open(self) -> None:
        """Creates the slot: changes committed from now on are kept for `updates`."""
        await self.conn.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", self.slot)

    async def close(self) -> None:
        """Drops the slot."""
        await self.conn.execute("SELECT pg_drop_replication_slot($1)", self.slot)

    async def updates(self) -> list[dict[str, str | None]]:
        """Every INSERT or UPDATE of a published table since the last call, in commit order."""
        rows = await self.conn.fetch(
            "SELECT data FROM pg_logical_slot_get_binary_changes($1, NULL, NULL, "
            "'proto_version', '1', 'publication_names', 'supabase_realtime')",
            self.slot,
        )
        changes: list[dict[str, str | None]] = []
        for row in rows:
            data = bytes(row["data"])
            kind = data[:1]
            if kind == b"R":
                (oid,) = struct.unpack_from(">I", data, 1)
                _, at = _cstring(data, 5)
                _, at = _cstring(data, at)
                at += 1  # replica identity
                (count,) = struct.unpack_from(">h", data, at)
                at += 2
                names = []
                for _ in range(count):
                    at += 1  # flags
                    name, at = _cstring(data, at)
                    names.append(name)
                    at += 8  # type oid, type modifier
                self._columns[oid] = names
            elif kind in (b"I", b"U"):
                (oid,) = struct.unpack_from(">I", data, 1)
                at = 5
                if data[at : at + 1] in (b"K", b"O"):  # the old key or row comes first
                    _, at = _tuple(data, at + 1)
                at += 1  # 'N'
                values, _ = _tuple(data, at)
                changes.append(dict(zip(self._columns[oid], values, strict=True)))
        return changes
