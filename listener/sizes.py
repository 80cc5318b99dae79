"""Byte counts as people read them."""

from __future__ import annotations

MIB = 1024 * 1024


def human_size(n: int) -> str:
    """`512 bytes`, `1.5 KiB`, `20 MiB`, `1 GiB`."""
    for unit, factor in (("GiB", 1024**3), ("MiB", MIB), ("KiB", 1024)):
        if n >= factor:
            return f"{round(n / factor, 1):g} {unit}"
    return f"{n} bytes"
