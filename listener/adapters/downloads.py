"""Streams an HTTP resource to a local file: a size limit, no redirects, a least rate, the disk checked."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from listener.errors import (
    FileGone,
    FileTooLarge,
    PermanentError,
    SpoolUnavailable,
    TransferStalled,
    TransientError,
)
from listener.sizes import MIB, human_size

CHUNK_BYTES = 256 * 1024
# Kept free on the spool's disk beyond a file's declared size, for everything else on it.
FREE_MARGIN_BYTES = 64 * MIB


@dataclass(frozen=True)
class MinimumRate:
    """A transfer that moves fewer than `bytes_per_s` on average over `window_s` is abandoned."""

    bytes_per_s: float = 8 * 1024
    window_s: float = 30.0


async def download(
    session: aiohttp.ClientSession,
    url: str,
    dest: Path,
    max_bytes: int,
    *,
    what: str,
    least_rate: MinimumRate | None = None,
) -> int:
    """Writes the body of GET `url` to `dest`; returns its size. `what` names it in errors."""
    least_rate = least_rate or MinimumRate()
    try:
        async with session.get(url, allow_redirects=False) as response:
            if response.status == 404:
                raise FileGone(f"{what} is no longer on the server (404)")
            if response.status in (408, 429) or response.status >= 500:
                raise TransientError(f"fetching {what} answered HTTP {response.status}")
            if response.status != 200:
                raise PermanentError(
                    f"Fetching the {what} failed: the server answered HTTP {response.status}."
                )
            declared = response.content_length
            if declared is not None and declared > max_bytes:
                raise FileTooLarge(_too_large(what, max_bytes))
            _check_free_space(dest.parent, declared or 0, what)
            return await _stream(response.content, dest, max_bytes, what, least_rate)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TransientError(f"fetching {what} failed: {type(exc).__name__}") from exc


async def _stream(
    body: aiohttp.StreamReader, dest: Path, max_bytes: int, what: str, least_rate: MinimumRate
) -> int:
    loop = asyncio.get_running_loop()
    size = 0
    window_start, window_bytes = loop.time(), 0
    try:
        with dest.open("wb") as out:
            while True:
                left_s = window_start + least_rate.window_s - loop.time()
                try:
                    chunk = await asyncio.wait_for(body.readany(), timeout=max(left_s, 0.001))
                except TimeoutError:
                    chunk = None  # nothing came before the window closed
                if chunk == b"":
                    return size
                if chunk:
                    size += len(chunk)
                    window_bytes += len(chunk)
                    if size > max_bytes:
                        raise FileTooLarge(_too_large(what, max_bytes))
                    out.write(chunk)
                if loop.time() - window_start >= least_rate.window_s:
                    if window_bytes < least_rate.bytes_per_s * least_rate.window_s:
                        raise TransferStalled(
                            f"{what} came at {window_bytes / least_rate.window_s:.0f} bytes/s, "
                            f"below the least rate of {least_rate.bytes_per_s:.0f}"
                        )
                    window_start, window_bytes = loop.time(), 0
    except OSError as exc:
        if isinstance(exc, TimeoutError | ConnectionError | aiohttp.ClientError):  # the network, not the disk
            raise
        raise SpoolUnavailable(f"the spool could not take the {what}: {exc.strerror or exc}") from exc


def _check_free_space(folder: Path, declared: int, what: str) -> None:
    """SpoolUnavailable unless the disk has room for `declared` bytes and the margin."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        raise SpoolUnavailable(f"the spool folder cannot be read: {exc.strerror or exc}") from exc
    if free < declared + FREE_MARGIN_BYTES:
        raise SpoolUnavailable(
            f"the spool has {human_size(free)} free, too little for the {what} ({human_size(declared)})"
        )


def _too_large(what: str, max_bytes: int) -> str:
    return f"The {what} is larger than the {human_size(max_bytes)} limit."
