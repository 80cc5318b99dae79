"""Storage against a real S3 server (moto on 127.0.0.1), including injected failures."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import pathlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from listener.adapters.storage.config import StorageConfig
from listener.adapters.storage.s3 import Storage
from listener.errors import PermanentError, TransientError
from listener.playground.local_s3 import LocalS3
from listener.sizes import MIB

pytestmark = pytest.mark.timeout(60)

SECRET = "very-secret-key-0123456789abcdef"
MakeStorage = Callable[..., Awaitable[Storage]]


@pytest.fixture(scope="module")
def local_s3() -> Iterator[LocalS3]:
    with LocalS3() as s3:
        yield s3


@pytest.fixture(autouse=True)
def _clean_faults(local_s3: LocalS3) -> Iterator[None]:
    yield
    local_s3.stop_failing()


@pytest.fixture
def config(local_s3: LocalS3) -> StorageConfig:
    # moto does not check signatures, so any secret works; this one is easy to look for.
    return dataclasses.replace(local_s3.config(), secret_access_key=SECRET)


@pytest.fixture
async def make_storage(config: StorageConfig) -> AsyncIterator[MakeStorage]:
    async with contextlib.AsyncExitStack() as stack:

        async def make(cfg: StorageConfig | None = None, **kwargs: int) -> Storage:
            return await stack.enter_async_context(Storage(cfg or config, **kwargs))

        yield make


@pytest.fixture
async def storage(make_storage: MakeStorage) -> Storage:
    return await make_storage()


@pytest.fixture
def key(request: pytest.FixtureRequest) -> str:
    # moto keeps objects for the whole process: each test writes its own keys.
    return f"user-1/generated-models/{request.node.name}.glb"


def write_random(path: pathlib.Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def assert_no_secret(exc: BaseException) -> None:
    seen: BaseException | None = exc
    while seen is not None:
        assert SECRET not in str(seen)
        assert SECRET not in repr(seen)
        seen = seen.__cause__ or seen.__context__


async def test_small_file_is_one_put_byte_identical(
    storage: Storage, local_s3: LocalS3, tmp_path: pathlib.Path, key: str
) -> None:
    data = write_random(tmp_path / "m.glb", 300_000)
    before = len(local_s3.requests)

    uploaded = await storage.upload_file(key, tmp_path / "m.glb", "model/gltf-binary")

    assert uploaded == len(data)
    assert local_s3.read_object(key) == data
    assert local_s3.object_info(key) == (len(data), "model/gltf-binary")
    writes = [(m, t) for m, t in local_s3.requests[before:] if m in {"PUT", "POST"}]
    assert writes == [("PUT", f"/ai-models/{key}")]


async def test_large_file_is_multipart_byte_identical(
    make_storage: MakeStorage, local_s3: LocalS3, tmp_path: pathlib.Path, key: str
) -> None:
    storage = await make_storage(multipart_threshold=5 * MIB, part_size=5 * MIB)
    data = write_random(tmp_path / "big.glb", 12 * MIB)
    before = len(local_s3.requests)

    uploaded = await storage.upload_file(key, tmp_path / "big.glb", "model/gltf-binary")

    assert uploaded == 12 * MIB
    assert local_s3.read_object(key) == data
    assert local_s3.object_info(key) == (12 * MIB, "model/gltf-binary")
    seen = local_s3.requests[before:]
    posts = [t.split("?")[1] for m, t in seen if m == "POST"]
    assert posts[0] == "uploads" and posts[1].startswith("uploadId=") and len(posts) == 2
    parts = [t for m, t in seen if m == "PUT"]
    assert len(parts) == 3 and all("partNumber=" in t for t in parts)


async def test_reupload_overwrites(
    storage: Storage, local_s3: LocalS3, tmp_path: pathlib.Path, key: str
) -> None:
    write_random(tmp_path / "a.png", 1000)
    second = write_random(tmp_path / "b.png", 2000)
    await storage.upload_file(key, tmp_path / "a.png", "image/png")
    await storage.upload_file(key, tmp_path / "b.png", "image/png")
    assert local_s3.read_object(key) == second


def test_public_url_quotes_segments(local_s3: LocalS3) -> None:
    cfg = dataclasses.replace(local_s3.config(), public_base_url="https://abc.supabase.co/")
    url = Storage(cfg).public_url("user 1/generated-models/my model#1?.glb")
    assert url == (
        "https://abc.supabase.co/storage/v1/object/public/ai-models/"
        "user%201/generated-models/my%20model%231%3F.glb"
    )


async def test_download_streams_to_disk(storage: Storage, local_s3: LocalS3, tmp_path: pathlib.Path) -> None:
    data = os.urandom(3 * MIB + 17)
    local_s3.put_object("user-1/source-images/in.png", data)

    size = await storage.download("user-1/source-images/in.png", tmp_path / "in.png", 10 * MIB)

    assert size == len(data)
    assert (tmp_path / "in.png").read_bytes() == data


async def test_download_of_missing_key_is_permanent(storage: Storage, tmp_path: pathlib.Path) -> None:
    with pytest.raises(PermanentError) as caught:
        await storage.download("user-1/source-images/nope.png", tmp_path / "x.png", MIB)
    assert str(caught.value) == "The source image was not found in Storage."
    assert not (tmp_path / "x.png").exists()
    assert_no_secret(caught.value)


async def test_download_larger_than_limit_is_permanent(
    storage: Storage, local_s3: LocalS3, tmp_path: pathlib.Path
) -> None:
    local_s3.put_object("user-1/source-images/huge.png", b"x" * (2 * MIB))
    with pytest.raises(PermanentError, match=r"larger than the 1 MiB limit"):
        await storage.download("user-1/source-images/huge.png", tmp_path / "h.png", MIB)
    assert not (tmp_path / "h.png").exists()


async def test_passing_503s_are_transient_then_the_retry_succeeds(
    storage: Storage, local_s3: LocalS3, tmp_path: pathlib.Path, key: str
) -> None:
    data = write_random(tmp_path / "m.glb", 50_000)
    local_s3.fail_requests(503, times=2)

    for _ in range(2):
        with pytest.raises(TransientError) as caught:
            await storage.upload_file(key, tmp_path / "m.glb", "model/gltf-binary")
        assert str(caught.value) == "Storage failed the upload for now (HTTP 503 SlowDown)."
        assert_no_secret(caught.value)
    await storage.upload_file(key, tmp_path / "m.glb", "model/gltf-binary")

    assert local_s3.failed_requests >= 2
    assert local_s3.read_object(key) == data


async def test_persisting_503s_stay_transient(
    storage: Storage, local_s3: LocalS3, tmp_path: pathlib.Path, key: str
) -> None:
    write_random(tmp_path / "m.glb", 50_000)
    local_s3.fail_requests(503)
    for _ in range(4):
        with pytest.raises(TransientError):
            await storage.upload_file(key, tmp_path / "m.glb", "model/gltf-binary")


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("AccessDenied", "Storage refused the upload: access denied."),
        ("InvalidAccessKeyId", "Storage refused the upload: the access key is not known."),
        (
            "SignatureDoesNotMatch",
            "Storage refused the upload: the secret key does not match the access key.",
        ),
        ("NoSuchBucket", "Storage refused the upload: the bucket does not exist."),
    ],
)
async def test_refusals_are_permanent_in_plain_words(
    storage: Storage, local_s3: LocalS3, tmp_path: pathlib.Path, key: str, code: str, message: str
) -> None:
    write_random(tmp_path / "m.glb", 50_000)
    local_s3.fail_requests(404 if code == "NoSuchBucket" else 403, code=code)
    for _ in range(2):  # a refusal persists; retrying does not change it
        with pytest.raises(PermanentError) as caught:
            await storage.upload_file(key, tmp_path / "m.glb", "model/gltf-binary")
        assert str(caught.value) == message
        assert_no_secret(caught.value)


async def test_failed_part_aborts_the_multipart_upload(
    make_storage: MakeStorage, local_s3: LocalS3, tmp_path: pathlib.Path, key: str
) -> None:
    storage = await make_storage(multipart_threshold=5 * MIB, part_size=5 * MIB)
    write_random(tmp_path / "big.glb", 11 * MIB)
    local_s3.fail_requests(503, times=1, methods=["PUT"])  # the first part
    before = len(local_s3.requests)

    with pytest.raises(TransientError):
        await storage.upload_file(key, tmp_path / "big.glb", "model/gltf-binary")

    assert any(m == "DELETE" and "uploadId=" in t for m, t in local_s3.requests[before:])
    assert local_s3.pending_multipart_uploads() == 0


async def test_download_503_is_transient(storage: Storage, local_s3: LocalS3, tmp_path: pathlib.Path) -> None:
    local_s3.put_object("user-1/source-images/ok.png", b"png")
    local_s3.fail_requests(503, methods=["GET"])
    with pytest.raises(TransientError):
        await storage.download("user-1/source-images/ok.png", tmp_path / "ok.png", MIB)


async def test_unreachable_endpoint_is_transient(
    make_storage: MakeStorage, config: StorageConfig, tmp_path: pathlib.Path
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    storage = await make_storage(dataclasses.replace(config, endpoint_url=f"http://127.0.0.1:{port}"))
    write_random(tmp_path / "m.glb", 1000)
    with pytest.raises(TransientError, match="could not be reached") as caught:
        await storage.upload_file("user-1/x.glb", tmp_path / "m.glb", "model/gltf-binary")
    assert_no_secret(caught.value)


@pytest.mark.parametrize("action", ["upload", "download"])
async def test_silent_server_times_out_as_transient(
    make_storage: MakeStorage, config: StorageConfig, tmp_path: pathlib.Path, action: str
) -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        # aiohttp waits for "100 Continue" without its read timeout: the request bound ends it.
        cfg = dataclasses.replace(
            config,
            endpoint_url=f"http://127.0.0.1:{port}",
            read_timeout_s=0.5,
            request_timeout_s=1.0,
        )
        storage = await make_storage(cfg)
        write_random(tmp_path / "m.glb", 1000)
        with pytest.raises(TransientError, match=f"did not answer the {action} in time") as caught:
            if action == "upload":
                await storage.upload_file("user-1/x.glb", tmp_path / "m.glb", "model/gltf-binary")
            else:
                await storage.download("user-1/x.png", tmp_path / "x.png", MIB)
        assert_no_secret(caught.value)
        assert not (tmp_path / "x.png").exists()
        await storage.__aexit__(None, None, None)  # drop the open connection before the server


async def test_secret_is_not_in_config_repr(config: StorageConfig) -> None:
    assert SECRET not in repr(config)
    assert SECRET not in str(config)
    assert SECRET not in repr(Storage(config))


async def test_using_storage_before_opening_it_fails_loudly(
    config: StorageConfig, tmp_path: pathlib.Path
) -> None:
    with pytest.raises(RuntimeError, match="not open"):
        await Storage(config).download("a", tmp_path / "a", 1)
