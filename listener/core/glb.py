"""Checks that a file is a binary glTF (GLB) and complete."""

from __future__ import annotations

import struct
from pathlib import Path

from listener.errors import PermanentError

GLB_MAGIC = b"glTF"
_HEADER = struct.Struct("<4sII")  # magic, version, total length


def verify_glb(path: Path) -> None:
    """Raises PermanentError unless the file starts with the glTF magic and has its declared length."""
    size = path.stat().st_size
    with path.open("rb") as f:
        header = f.read(_HEADER.size)
    if len(header) < _HEADER.size or header[:4] != GLB_MAGIC:
        raise PermanentError("The AI server returned a file that is not a GLB model.")
    _, version, declared = _HEADER.unpack(header)
    if version != 2:
        raise PermanentError(
            f"The AI server returned a GLB of version {version}; only version 2 is supported."
        )
    if declared != size:
        raise PermanentError(
            f"The AI server returned an incomplete GLB model ({size} bytes of the {declared} it declares)."
        )
