"""The checks a row's request passes before anything is spent on it, and the reasons it is refused."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from listener.core.data import ClaimedJob
from listener.core.validation import MAX_PROMPT_CHARS, SourceImage, ValidRequest, validate
from listener.errors import PermanentError
from tests.unit.fakes import BUCKET, PUBLIC_BASE_URL, SOURCE_HOST, claimed_job

OWNER_ID = uuid.UUID("11111111-1111-4111-8111-111111111111")
OTHER_ID = uuid.UUID("22222222-2222-4222-8222-222222222222")
PUBLIC = f"{PUBLIC_BASE_URL}/storage/v1/object/public/{BUCKET}"


def check(**overrides: Any) -> ValidRequest:
    job: ClaimedJob = claimed_job(user_id=OWNER_ID, **overrides)
    return validate(
        job, bucket=BUCKET, public_base_url=PUBLIC_BASE_URL, source_hosts=frozenset({SOURCE_HOST})
    )


def refused(**overrides: Any) -> str:
    with pytest.raises(PermanentError) as caught:
        check(**overrides)
    return str(caught.value)


def image(source: str | None, **overrides: Any) -> dict[str, Any]:
    return {"generation_type": "image_to_3d", "prompt": None, "source_image_url": source, **overrides}


# -- prompts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (None, "The prompt is empty."),
        ("", "The prompt is empty."),
        ("  \n\t ", "The prompt is empty."),
        (
            "x" * (MAX_PROMPT_CHARS + 1),
            "The prompt is too long: 601 characters, the most the AI server accepts is 600.",
        ),
    ],
)
def test_a_text_request_needs_a_prompt_of_at_most_600_characters(prompt: str | None, message: str) -> None:
    assert refused(prompt=prompt) == message


@pytest.mark.parametrize(
    ("prompt", "sent"),
    [
        ("x" * MAX_PROMPT_CHARS, "x" * MAX_PROMPT_CHARS),
        ("  " + "y" * MAX_PROMPT_CHARS + "\n", "y" * MAX_PROMPT_CHARS),
        ("  a red teapot ", "a red teapot"),
    ],
)
def test_a_prompt_is_sent_stripped_and_its_length_counted_without_the_blanks(prompt: str, sent: str) -> None:
    assert check(prompt=prompt).model.prompt == sent


@pytest.mark.parametrize(("prompt", "sent"), [(None, None), ("   ", None), (" a cat ", "a cat")])
def test_an_image_request_may_go_without_a_prompt(prompt: str | None, sent: str | None) -> None:
    assert check(**image(f"{OWNER_ID}/cat.png", prompt=prompt)).model.prompt == sent


def test_an_image_request_with_a_too_long_prompt_is_refused() -> None:
    assert "too long" in refused(**image(f"{OWNER_ID}/cat.png", prompt="z" * 700))


# -- generation types, symmetry, art style ------------------------------------------------


@pytest.mark.parametrize("kind", ["text-to-3d", "TEXT_TO_3D", "", "sketch_to_3d"])
def test_an_unsupported_generation_type_is_refused(kind: str) -> None:
    assert refused(generation_type=kind) == (
        f"The generation type {kind!r} is not supported; use text_to_3d or image_to_3d."
    )


@pytest.mark.parametrize(
    ("mode", "sent"), [(None, None), ("", None), ("off", "off"), ("auto", "auto"), ("on", "on")]
)
def test_the_symmetry_modes_accepted(mode: str | None, sent: str | None) -> None:
    assert check(symmetry_mode=mode).model.symmetry_mode == sent


@pytest.mark.parametrize("mode", ["ON", "sideways", " on"])
def test_an_unknown_symmetry_mode_is_refused(mode: str) -> None:
    assert refused(symmetry_mode=mode) == f"The symmetry mode {mode!r} is not one of off, auto or on."


@pytest.mark.parametrize(("style", "sent"), [(None, None), ("   ", None), (" sculpture ", "sculpture")])
def test_an_art_style_is_sent_stripped_or_not_at_all(style: str | None, sent: str | None) -> None:
    assert check(art_style=style).model.art_style == sent


# -- polycount ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "sent"), [(None, None), (100.0, 100), (30000.0, 30000), (300_000.0, 300_000)]
)
def test_a_polycount_in_range_is_sent_as_an_integer(value: float | None, sent: int | None) -> None:
    polycount = check(target_polycount=value).model.target_polycount
    assert polycount == sent and (sent is None or type(polycount) is int)


@pytest.mark.parametrize(
    "value", [99.0, 300_001.0, 0.0, -500.0, 1000.5, float("nan"), float("inf"), float("-inf"), 1e300]
)
def test_a_polycount_out_of_range_or_not_whole_is_refused(value: float) -> None:
    assert (
        refused(target_polycount=value) == "The target polycount must be a whole number from 100 to 300,000."
    )


# -- source images ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            f"{OWNER_ID}/uploads/cat.png",
            SourceImage(f"{OWNER_ID}/uploads/cat.png", None, "cat.png", "image/png"),
        ),
        (f"/{OWNER_ID}/cat.JPG", SourceImage(f"{OWNER_ID}/cat.JPG", None, "cat.JPG", "image/jpeg")),
        (
            f"  {OWNER_ID}/a/b/cat.jpeg ",
            SourceImage(f"{OWNER_ID}/a/b/cat.jpeg", None, "cat.jpeg", "image/jpeg"),
        ),
        (
            f"{PUBLIC}/{OWNER_ID}/cat.webp",
            SourceImage(f"{OWNER_ID}/cat.webp", None, "cat.webp", "image/webp"),
        ),
        (
            f"{PUBLIC}/{OWNER_ID}/my%20cat.png",
            SourceImage(f"{OWNER_ID}/my cat.png", None, "my cat.png", "image/png"),
        ),
        (
            f"https://{SOURCE_HOST}/pics/dog.png?size=large",
            SourceImage(None, f"https://{SOURCE_HOST}/pics/dog.png?size=large", "dog.png", "image/png"),
        ),
        (
            "https://IMAGES.example.com/pics/dog.webp",
            SourceImage(None, "https://IMAGES.example.com/pics/dog.webp", "dog.webp", "image/webp"),
        ),
        (
            f"https://{SOURCE_HOST}:443/pics/dog%20two.jpg",
            SourceImage(None, f"https://{SOURCE_HOST}:443/pics/dog%20two.jpg", "dog two.jpg", "image/jpeg"),
        ),
    ],
)
def test_a_source_image_in_the_owners_folder_or_on_an_allowed_host_is_accepted(
    source: str, expected: SourceImage
) -> None:
    assert check(**image(source)).image == expected


def test_a_source_image_url_must_be_https() -> None:
    assert (
        refused(**image(f"http://{SOURCE_HOST}/dog.png")) == "The source image URL must start with https://."
    )


def test_a_source_image_url_may_name_only_port_443_or_a_port_listed_with_its_host() -> None:
    source = f"https://{SOURCE_HOST}:8443/dog.png"
    assert refused(**image(source)) == (
        f"The source image URL names a port that is not allowed for {SOURCE_HOST}."
    )
    job = claimed_job(generation_type="image_to_3d", prompt=None, source_image_url=source)
    listed = frozenset({f"{SOURCE_HOST}:8443"})
    request = validate(job, bucket=BUCKET, public_base_url=PUBLIC_BASE_URL, source_hosts=listed)
    assert request.image == SourceImage(None, source, "dog.png", "image/png")


@pytest.mark.parametrize("source", [None, "", "   "])
def test_an_image_request_without_an_image_is_refused(source: str | None) -> None:
    assert refused(**image(source)) == "An image-to-3D request needs a source image, and none was given."


@pytest.mark.parametrize(
    "source",
    [
        f"{OTHER_ID}/cat.png",
        f"{OWNER_ID}/../{OTHER_ID}/cat.png",
        f"{OWNER_ID}/uploads/../../{OTHER_ID}/cat.png",
        f"../{OWNER_ID}/cat.png",
        "cat.png",
        f"{PUBLIC}/{OTHER_ID}/cat.png",
        f"{PUBLIC}/{OWNER_ID}/%2E%2E/{OTHER_ID}/cat.png",
    ],
)
def test_a_storage_path_outside_the_owners_folder_is_refused(source: str) -> None:
    assert refused(**image(source)) == "The source image must be a Storage path in the owner's own folder."


@pytest.mark.parametrize(
    ("source", "host"),
    [
        ("https://evil.example.net/cat.png", "evil.example.net"),
        (f"https://{SOURCE_HOST}.evil.net/cat.png", f"{SOURCE_HOST}.evil.net"),
        (f"https://{SOURCE_HOST}@evil.net/cat.png", "evil.net"),
        (
            f"{PUBLIC_BASE_URL}/storage/v1/object/public/other-bucket/{OWNER_ID}/cat.png",
            "project.supabase.co",
        ),
    ],
)
def test_a_source_image_on_a_host_not_allowed_is_refused(source: str, host: str) -> None:
    assert refused(**image(source)) == f"The source image is on {host}, which is not an allowed host."


@pytest.mark.parametrize(
    "source", [f"ftp://{SOURCE_HOST}/cat.png", f"//{SOURCE_HOST}/cat.png", "file:///etc/cat.png"]
)
def test_a_source_image_that_is_neither_a_storage_path_nor_http_is_refused(source: str) -> None:
    assert "must be a Storage path or an https URL" in refused(**image(source))


@pytest.mark.parametrize(
    "source",
    [
        f"{OWNER_ID}/cat.gif",
        f"{OWNER_ID}/cat.svg",
        f"{OWNER_ID}/cat",
        f"{OWNER_ID}/cat.png.exe",
        f"https://{SOURCE_HOST}/",
        f"https://{SOURCE_HOST}/cat.bmp",
    ],
)
def test_a_source_image_that_is_not_png_jpeg_or_webp_is_refused(source: str) -> None:
    assert refused(**image(source)) == "The source image must be a PNG, JPEG or WebP file."


def test_a_text_request_ignores_a_source_image() -> None:
    assert check(source_image_url="https://evil.example.net/cat.png").image is None
