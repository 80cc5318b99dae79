"""Checks a row's request before anything is spent on it; a bad one fails with a plain reason."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import SplitResult, unquote, urlsplit

from listener.core.data import ClaimedJob, ModelRequest
from listener.errors import PermanentError

# The upstream provider limits text prompts to about 600 characters.
MAX_PROMPT_CHARS = 600
POLYCOUNT_RANGE = (100, 300_000)
SYMMETRY_MODES = ("off", "auto", "on")
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


@dataclass(frozen=True)
class SourceImage:
    """Where the image of an image-to-3D request comes from: a Storage path or an allowed URL."""

    storage_path: str | None
    url: str | None
    filename: str
    content_type: str


@dataclass(frozen=True)
class ValidRequest:
    """A request that passed every check."""

    model: ModelRequest
    image: SourceImage | None


def validate(
    job: ClaimedJob, *, bucket: str, public_base_url: str, source_hosts: frozenset[str]
) -> ValidRequest:
    """The request of `job`, or PermanentError saying what is wrong with it."""
    if job.generation_type == "text_to_3d":
        prompt: str | None = _prompt(job.prompt)
        image = None
    elif job.generation_type == "image_to_3d":
        prompt = _prompt(job.prompt) if (job.prompt or "").strip() else None
        image = _source_image(job, bucket, public_base_url, source_hosts)
    else:
        raise PermanentError(
            f"The generation type {job.generation_type!r} is not supported; use text_to_3d or image_to_3d."
        )
    model = ModelRequest(
        job.generation_type,
        prompt=prompt,
        art_style=(job.art_style or "").strip() or None,
        symmetry_mode=_symmetry(job.symmetry_mode),
        target_polycount=_polycount(job.target_polycount),
    )
    return ValidRequest(model, image)


def _prompt(prompt: str | None) -> str:
    text = (prompt or "").strip()
    if not text:
        raise PermanentError("The prompt is empty.")
    if len(text) > MAX_PROMPT_CHARS:
        raise PermanentError(
            f"The prompt is too long: {len(text)} characters, "
            f"the most the AI server accepts is {MAX_PROMPT_CHARS}."
        )
    return text


def _symmetry(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if value not in SYMMETRY_MODES:
        raise PermanentError(f"The symmetry mode {value!r} is not one of off, auto or on.")
    return value


def _polycount(value: float | None) -> int | None:
    if value is None:
        return None
    low, high = POLYCOUNT_RANGE
    if not math.isfinite(value) or value != int(value) or not low <= value <= high:
        raise PermanentError(f"The target polycount must be a whole number from {low:,} to {high:,}.")
    return int(value)


def _source_image(
    job: ClaimedJob, bucket: str, public_base_url: str, source_hosts: frozenset[str]
) -> SourceImage:
    raw = (job.source_image_url or "").strip()
    if not raw:
        raise PermanentError("An image-to-3D request needs a source image, and none was given.")
    public_prefix = f"{public_base_url.rstrip('/')}/storage/v1/object/public/{bucket}/"
    if raw.startswith(public_prefix):
        raw = unquote(raw[len(public_prefix) :])
    parts = urlsplit(raw)
    if parts.scheme in ("http", "https"):
        _check_source_url(parts, source_hosts)
        return SourceImage(None, raw, *_image_name(parts.path))
    if parts.scheme or parts.netloc:
        raise PermanentError("The source image must be a Storage path or an https URL on an allowed host.")
    path = PurePosixPath(raw.lstrip("/"))
    if ".." in path.parts or len(path.parts) < 2 or path.parts[0] != str(job.user_id):
        raise PermanentError("The source image must be a Storage path in the owner's own folder.")
    return SourceImage(str(path), None, *_image_name(str(path)))


def _check_source_url(parts: SplitResult, source_hosts: frozenset[str]) -> None:
    """An https URL on an allowed host, on port 443 or a port listed with the host (`host:port`)."""
    host = (parts.hostname or "").lower()
    if host not in source_hosts and not any(entry.startswith(f"{host}:") for entry in source_hosts):
        raise PermanentError(
            f"The source image is on {host or 'an unknown host'}, which is not an allowed host."
        )
    if parts.scheme != "https":
        raise PermanentError("The source image URL must start with https://.")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port not in (None, 443) and f"{host}:{port}" not in source_hosts:
        raise PermanentError(f"The source image URL names a port that is not allowed for {host}.")


def _image_name(path: str) -> tuple[str, str]:
    name = PurePosixPath(unquote(path)).name or "image"
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in IMAGE_TYPES:
        raise PermanentError("The source image must be a PNG, JPEG or WebP file.")
    return name, IMAGE_TYPES[suffix]
