"""Streams an HTTP resource to a local file, with a size limit and no redirects."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from listener.errors import FileGone, PermanentError, TransientError
from listener.sizes import human_size

CHUNK_BYTES = 256 * 1024


async def download(session: aiohttp.ClientSession, url: str, dest: Path, max_bytes: int, *, what: str) -> int:
    """Writes the body of GET `url` to `dest`; returns its size. `what` names it in errors."""
    try:
        async with session.get(url, allow_redirects=False) as response:
            if response.status == 404:
                raise FileGone(f"{what} is no longer on the server (404)")
            if response.status in (408, 429) or response.status >= 500:
                raise TransientError(f"fetching {what} answered HTTP {response.status}")
            if response.status != 200:
                raise PermanentError(f"Fetching {what} failed: the server answered HTTP {response.status}.")
            declared = response.content_length
            if declared is not None and declared > max_bytes:
                raise PermanentError(_too_large(what, max_bytes))
            size = 0
            with dest.open("wb") as out:
                async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                    size += len(chunk)
                    if size > max_bytes:
                        raise PermanentError(_too_large(what, max_bytes))
                    out.write(chunk)
            return size
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TransientError(f"fetching {what} failed: {type(exc).__name__}") from exc


def _too_large(what: str, max_bytes: int) -> str:
    return f"The {what} is larger than the {human_size(max_bytes)} limit."
