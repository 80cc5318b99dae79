"""What kind of image a file is, by its first bytes (its name and the server's word are not trusted)."""

from __future__ import annotations

from pathlib import Path

_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
)


def image_type(path: Path) -> str | None:
    """`image/png`, `image/jpeg` or `image/webp` for such a file; None for anything else."""
    with path.open("rb") as f:
        head = f.read(12)
    for signature, content_type in _SIGNATURES:
        if head.startswith(signature):
            return content_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None
