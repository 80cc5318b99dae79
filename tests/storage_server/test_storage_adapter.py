"""The Storage adapter against the real Supabase Storage server: what it stores, and how it refuses."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from listener.adapters.storage.s3 import Storage
from listener.errors import BUCKET_LIMIT, STORAGE_SETUP, PermanentError
from listener.sizes import MIB
from tests.support.stack import NO_WAIT
from tests.support.storage_server import RealStorage

pytestmark = pytest.mark.timeout(300)

GLB = "model/gltf-binary"
MakeStorage = Callable[..., Awaitable[Storage]]


@pytest.fixture
async def make_storage(real_storage: RealStorage, bucket: str) -> AsyncIterator[MakeStorage]:
    async with contextlib.AsyncExitStack() as stack:

        async def make(**changes: object) -> Storage:
            sizes = {k: changes.pop(k) for k in ("multipart_threshold", "part_size") if k in changes}
            config = real_storage.config(bucket, **changes)
            return await stack.enter_async_context(Storage(config, **sizes))  # type: ignore[arg-type]

        yield make


def write_random(path: pathlib.Path, size: int) -> str:
    """`size` random bytes (one random MiB repeated); returns their sha256."""
    block, digest = os.urandom(min(size, MIB)), hashlib.sha256()
    with path.open("wb") as out:
        for offset in range(0, size, MIB):
            chunk = block[: min(MIB, size - offset)]
            out.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


async def upload(storage: Storage, tmp_path: pathlib.Path, size: int = 2048, content_type: str = GLB) -> str:
    write_random(tmp_path / "m.bin", size)
    key = "user-1/generated-models/m.glb"
    await storage.upload_file(key, tmp_path / "m.bin", content_type)
    return key


@pytest.mark.parametrize("size", [2048, 12 * MIB], ids=["one-put", "multipart"])
async def test_an_upload_is_stored_byte_identical_and_public(
    make_storage: MakeStorage, real_storage: RealStorage, bucket: str, tmp_path: pathlib.Path, size: int
) -> None:
    storage = await make_storage(multipart_threshold=8 * MIB, part_size=5 * MIB)
    digest = write_random(tmp_path / "m.glb", size)

    assert await storage.upload_file("user-1/generated-models/m.glb", tmp_path / "m.glb", GLB) == size

    assert await real_storage.object_digest(bucket, "user-1/generated-models/m.glb") == (size, digest, GLB)
    assert await real_storage.public_status(storage.public_url("user-1/generated-models/m.glb")) == 200


async def test_a_one_gib_model_is_stored_byte_identical(
    make_storage: MakeStorage, real_storage: RealStorage, bucket: str, tmp_path: pathlib.Path
) -> None:
    storage = await make_storage()
    digest = write_random(tmp_path / "big.glb", 1024 * MIB)

    assert (
        await storage.upload_file("user-1/generated-models/big.glb", tmp_path / "big.glb", GLB) == 1024 * MIB
    )

    stored = await real_storage.object_digest(bucket, "user-1/generated-models/big.glb")
    assert stored == (1024 * MIB, digest, GLB)


async def test_a_deleted_object_is_gone_from_its_public_url(
    make_storage: MakeStorage, real_storage: RealStorage, tmp_path: pathlib.Path
) -> None:
    storage = await make_storage()
    key = await upload(storage, tmp_path)
    await storage.delete(key)
    await storage.delete(key)  # none there is no error
    # This server answers 400, not 404, for an object that is not there.
    assert await real_storage.public_status(storage.public_url(key)) == 400


async def test_a_missing_source_image_is_said_so(make_storage: MakeStorage, tmp_path: pathlib.Path) -> None:
    storage = await make_storage()
    with pytest.raises(PermanentError, match=r"^The source image was not found in Storage\.$"):
        await storage.download("user-1/source-images/none.png", tmp_path / "none.png", MIB)
    assert not (tmp_path / "none.png").exists()


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"secret_access_key": "not-the-secret"}, "the secret key does not match the access key"),
        ({"access_key_id": "not-the-key"}, "the access key is not known"),
        ({"region": "us-west-2"}, "the region is not the project's region"),
    ],
    ids=["wrong-secret", "wrong-key", "wrong-region"],
)
async def test_wrong_keys_or_region_are_a_setup_problem_in_words(
    make_storage: MakeStorage, tmp_path: pathlib.Path, changes: dict[str, str], says: str
) -> None:
    storage = await make_storage(**changes)
    with pytest.raises(PermanentError) as caught:
        await upload(storage, tmp_path)
    assert str(caught.value) == f"Storage refused the upload: {says}."
    assert caught.value.kind == STORAGE_SETUP
    found = await storage.check()
    assert found is not None and found[0] == "access_denied"


@pytest.mark.parametrize("size", [2048, 12 * MIB], ids=["one-put", "multipart"])
async def test_a_missing_bucket_is_a_setup_problem_in_words(
    make_storage: MakeStorage, real_storage: RealStorage, bucket: str, tmp_path: pathlib.Path, size: int
) -> None:
    storage = await make_storage(multipart_threshold=8 * MIB, part_size=5 * MIB)
    await real_storage.delete_bucket(bucket)

    with pytest.raises(PermanentError) as caught:
        await upload(storage, tmp_path, size)

    assert str(caught.value) == "Storage refused the upload: the bucket does not exist."
    assert caught.value.kind == STORAGE_SETUP
    found = await storage.check()
    assert found is not None and found[0] == "no_bucket"


@pytest.mark.parametrize("size", [2048, 12 * MIB], ids=["one-put", "multipart"])
async def test_the_buckets_limits_are_refusals_in_words(
    make_storage: MakeStorage, real_storage: RealStorage, bucket: str, tmp_path: pathlib.Path, size: int
) -> None:
    storage = await make_storage(multipart_threshold=8 * MIB, part_size=5 * MIB)
    await real_storage.set_limits(bucket, file_size_limit=1024, allowed_mime_types=[GLB])

    with pytest.raises(PermanentError) as too_large:
        # The server answers 413 as soon as it reads a part's length and closes the connection
        # while the part still arrives: now and then the gateway loses that answer to the reset
        # and says 502, a passing failure. The listener retries those (as here), then reads it.
        await NO_WAIT.call(lambda: upload(storage, tmp_path, size))
    with pytest.raises(PermanentError) as wrong_type:
        await upload(storage, tmp_path, 100, "application/octet-stream")

    assert str(too_large.value) == "Storage refused the upload: the file is larger than the bucket accepts."
    assert str(wrong_type.value) == (
        "Storage refused the upload: the bucket does not accept files of type application/octet-stream."
    )
    assert too_large.value.kind == wrong_type.value.kind == BUCKET_LIMIT
