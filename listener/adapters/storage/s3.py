"""Supabase Storage through its S3-compatible endpoint; the only module that imports aiobotocore."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
from types import TracebackType
from typing import Any, BinaryIO
from urllib.parse import quote

import aiohttp
import botocore.exceptions
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession

from listener.adapters.storage.config import StorageConfig
from listener.adapters.storage.file_parts import FilePart
from listener.errors import BUCKET_LIMIT, STORAGE_SETUP, PermanentError, TransientError
from listener.sizes import MIB, human_size

log = logging.getLogger(__name__)

_MIN_PART_SIZE = 5 * MIB  # S3's floor for every part but the last
_MAX_PARTS = 10_000  # S3's ceiling on parts per upload
# Parts of one upload sent at once: the server's work on one part (its signature check, its
# database rows, its disk) overlaps the next part's transfer. Parts stream from disk.
PART_CONCURRENCY = 4
_CHUNK_SIZE = 1 * MIB  # download chunk written to disk at a time
_ABORT_TIMEOUT_S = 30.0

# Error codes worth retrying even when the status alone would not say so.
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "NoSuchUpload",  # the multipart upload vanished: a retry starts a new one
    }
)
# What this module translates; anything else is a bug and propagates as it is.
_STORAGE_ERRORS = (
    botocore.exceptions.BotoCoreError,
    botocore.exceptions.ClientError,
    aiohttp.ClientError,
    OSError,  # TimeoutError and ConnectionError included
)
_TIMEOUTS = (
    TimeoutError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
)
_MISUSE = (
    botocore.exceptions.NoCredentialsError,
    botocore.exceptions.PartialCredentialsError,
    botocore.exceptions.ParamValidationError,
)
# Refusals that say Storage is set up wrongly (keys, bucket, region), not that this file is
# wrong: a row meeting one waits for Storage to be fixed rather than failing.
_SETUP_REFUSALS = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket", "InvalidBucketName"}
)
# Why Storage refused a request, said for a person; anything else names its code.
_REFUSALS = {
    "AccessDenied": "access denied",
    "InvalidAccessKeyId": "the access key is not known",
    "SignatureDoesNotMatch": "the secret key does not match the access key",
    "NoSuchBucket": "the bucket does not exist",
    "InvalidBucketName": "the bucket name is not valid",
}
# Supabase Storage says AccessDenied for several setup problems; its message tells them apart.
_ACCESS_DENIED_BECAUSE = {
    "Invalid Access Key": "the access key is not known",
    "Invalid Region": "the region is not the project's region",
}


class Storage:
    """S3-compatible object storage (Supabase Storage)."""

    def __init__(
        self,
        config: StorageConfig,
        *,
        multipart_threshold: int = 8 * MIB,
        part_size: int = 8 * MIB,
        part_concurrency: int = PART_CONCURRENCY,
    ) -> None:
        if part_size < _MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {_MIN_PART_SIZE} bytes")
        if multipart_threshold < 1:
            raise ValueError("multipart_threshold must be positive")
        if part_concurrency < 1:
            raise ValueError("part_concurrency must be positive")
        self._config = config
        self._multipart_threshold = multipart_threshold
        self._part_size = part_size
        self._part_concurrency = part_concurrency
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    async def __aenter__(self) -> Storage:
        """Open the one S3 client this process uses."""
        cfg = self._config
        client_config = AioConfig(
            s3={"addressing_style": "path"},
            # Checksums only where an operation requires them: older Supabase Storage
            # releases refuse the CRC32 and aws-chunked uploads botocore sends by default
            # (1.11.2 takes them); this setting works with every release.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=cfg.connect_timeout_s,
            read_timeout=cfg.read_timeout_s,
            # The caller's retry policy retries; botocore must not retry underneath it.
            # (`max_attempts` counts retries after the first try; `total_max_attempts` all.)
            retries={"total_max_attempts": 1, "mode": "standard"},
        )
        async with contextlib.AsyncExitStack() as stack:
            self._client = await stack.enter_async_context(
                AioSession().create_client(
                    "s3",
                    region_name=cfg.region,
                    endpoint_url=cfg.endpoint_url,
                    aws_access_key_id=cfg.access_key_id,
                    aws_secret_access_key=cfg.secret_access_key,
                    config=client_config,
                )
            )
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the client."""
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def check(self) -> tuple[str, str] | None:
        """None when the bucket answers to these keys; else (a short code, what is wrong in words)."""
        client = self._require_client()
        bucket = self._config.bucket
        try:
            await client.head_bucket(Bucket=bucket)
        except botocore.exceptions.ClientError as exc:
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if status == 404:
                return "no_bucket", f"the bucket {bucket} does not exist"
            if status in (401, 403):
                return (
                    "access_denied",
                    f"the keys may not use the bucket {bucket} (check the keys and region)",
                )
            return "refused", f"the bucket {bucket} could not be checked: {_translate(exc, 'check')}"
        except (*_STORAGE_ERRORS, *_MISUSE) as exc:
            return (
                "unreachable",
                f"Storage could not be reached for the bucket {bucket}: {_translate(exc, 'check')}",
            )
        return None

    def public_url(self, path: str) -> str:
        """Return the public URL of an object in the bucket."""
        base = self._config.public_base_url.rstrip("/")
        bucket = quote(self._config.bucket, safe="")
        quoted = "/".join(quote(segment, safe="") for segment in path.split("/"))
        return f"{base}/storage/v1/object/public/{bucket}/{quoted}"

    async def upload_file(self, path: str, local_file: pathlib.Path, content_type: str) -> int:
        """Upload a local file to `path`, streaming from disk; return the bytes uploaded."""
        client = self._require_client()
        try:
            size = (await asyncio.to_thread(local_file.stat)).st_size
        except OSError as exc:
            raise PermanentError(f"The file to upload could not be read: {exc.strerror or exc}.") from exc
        if size < self._multipart_threshold:
            await self._put_object(client, path, local_file, size, content_type)
        else:
            await self._multipart_upload(client, path, local_file, size, content_type)
        return size

    async def download(self, path: str, dest: pathlib.Path, max_bytes: int) -> int:
        """Stream an object to `dest`; return its size in bytes."""
        client = self._require_client()
        try:
            try:
                async with asyncio.timeout(self._config.request_timeout_s):
                    return await self._download(client, path, dest, max_bytes)
            except TimeoutError as exc:
                raise _translate(exc, "download") from exc
        except BaseException:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(dest.unlink, missing_ok=True)
            raise

    async def delete(self, path: str) -> None:
        """Removes the object at `path`; none there is no error (S3 answers 204 either way)."""
        client = self._require_client()
        try:
            async with asyncio.timeout(self._config.request_timeout_s):
                await client.delete_object(Bucket=self._config.bucket, Key=path)
        except _STORAGE_ERRORS as exc:
            raise _translate(exc, "delete") from exc

    def _require_client(self) -> Any:
        if self._client is None:
            raise RuntimeError("Storage is not open: use `async with Storage(config)`")
        return self._client

    async def _put_object(
        self, client: Any, path: str, local_file: pathlib.Path, size: int, content_type: str
    ) -> None:
        fh = await _open_for_upload(local_file)
        try:
            async with asyncio.timeout(self._config.request_timeout_s):
                # aiohttp reads an open file in its executor, so the body streams from disk.
                await client.put_object(
                    Bucket=self._config.bucket,
                    Key=path,
                    Body=fh,
                    ContentLength=size,
                    ContentType=content_type,
                )
        except _STORAGE_ERRORS as exc:
            raise _translate(exc, "upload", content_type) from exc
        finally:
            await asyncio.to_thread(fh.close)

    async def _multipart_upload(
        self, client: Any, path: str, local_file: pathlib.Path, size: int, content_type: str
    ) -> None:
        bucket, timeout_s = self._config.bucket, self._config.request_timeout_s
        part_size = max(self._part_size, -(-size // _MAX_PARTS))
        fh = await _open_for_upload(local_file)
        upload_id: str | None = None
        try:
            async with asyncio.timeout(timeout_s):
                created = await client.create_multipart_upload(
                    Bucket=bucket, Key=path, ContentType=content_type
                )
            upload_id = str(created["UploadId"])
            parts = await self._send_parts(client, path, upload_id, fh, size, part_size)
            async with asyncio.timeout(timeout_s):
                await client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=path,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException as exc:
            if upload_id is not None:
                await self._abort(client, path, upload_id)
            if isinstance(exc, _STORAGE_ERRORS):
                raise _translate(exc, "upload", content_type) from exc
            raise
        finally:
            await asyncio.to_thread(fh.close)

    async def _send_parts(
        self, client: Any, path: str, upload_id: str, fh: BinaryIO, size: int, part_size: int
    ) -> list[dict[str, Any]]:
        """Sends the file's parts, a few at once; the parts' list for completing the upload."""
        numbers = iter(range(1, -(-size // part_size) + 1))
        etags: dict[int, str] = {}
        failures: list[BaseException] = []

        async def send() -> None:
            # After a failure no new part starts; those under way end on their own (each within
            # the request bound) rather than being cancelled in the middle of their bodies.
            for number in numbers:
                if failures:
                    return
                offset = (number - 1) * part_size
                length = min(part_size, size - offset)
                try:
                    async with asyncio.timeout(self._config.request_timeout_s):
                        answer = await client.upload_part(
                            Bucket=self._config.bucket,
                            Key=path,
                            UploadId=upload_id,
                            PartNumber=number,
                            # Streams from disk, read in the HTTP client's executor.
                            Body=FilePart(fh.fileno(), offset, length),
                            ContentLength=length,
                        )
                except Exception as exc:
                    failures.append(exc)
                    return
                etags[number] = answer["ETag"]

        await asyncio.gather(*(send() for _ in range(self._part_concurrency)))
        if failures:
            raise failures[0]
        return [{"ETag": etags[number], "PartNumber": number} for number in sorted(etags)]

    async def _abort(self, client: Any, path: str, upload_id: str) -> None:
        # Best effort: a leftover upload costs storage but must not hide the real error.
        try:
            async with asyncio.timeout(_ABORT_TIMEOUT_S):
                await client.abort_multipart_upload(Bucket=self._config.bucket, Key=path, UploadId=upload_id)
        except Exception as exc:
            log.warning(
                "storage_abort_failed",
                extra={"path": path, "upload_id": upload_id, "error": type(exc).__name__},
            )

    async def _download(self, client: Any, path: str, dest: pathlib.Path, max_bytes: int) -> int:
        too_large = PermanentError(f"The source image is larger than the {human_size(max_bytes)} limit.")
        try:
            answer = await client.get_object(Bucket=self._config.bucket, Key=path)
        except _STORAGE_ERRORS as exc:
            raise _translate(exc, "download") from exc
        body = answer["Body"]
        written = 0
        try:
            if int(answer.get("ContentLength") or 0) > max_bytes:
                raise too_large
            fh = await asyncio.to_thread(dest.open, "wb")
            try:
                while chunk := await body.read(_CHUNK_SIZE):
                    written += len(chunk)
                    if written > max_bytes:
                        raise too_large
                    await asyncio.to_thread(fh.write, chunk)
            finally:
                await asyncio.to_thread(fh.close)
        except _STORAGE_ERRORS as exc:
            raise _translate(exc, "download") from exc
        finally:
            body.close()
        return written


async def _open_for_upload(local_file: pathlib.Path) -> BinaryIO:
    try:
        return await asyncio.to_thread(local_file.open, "rb")
    except OSError as exc:
        raise PermanentError(f"The file to upload could not be read: {exc.strerror or exc}.") from exc


def _error_fields(response: dict[str, Any]) -> tuple[str, str]:
    """The S3 error's code and message, wherever botocore left them.

    botocore parses `<Error>` into response["Error"]; Supabase Storage writes it with the S3
    namespace (`<Error xmlns="http://s3.amazonaws.com/doc/2006-03-01/">`), which botocore
    leaves at the top of the response, with response["Error"] empty."""
    error = response.get("Error") or {}
    code = str(error.get("Code") or response.get("Code") or "")
    message = str(error.get("Message") or response.get("Message") or "")
    return code, message


def _translate(exc: BaseException, action: str, content_type: str = "") -> Exception:
    """Map a botocore, aiohttp or socket failure onto the project's errors, in plain words."""
    if isinstance(exc, botocore.exceptions.ClientError):
        code, message = _error_fields(dict(exc.response))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if action == "upload" and status == 404 and code != "NoSuchUpload":
            # Uploads name only the bucket and a key that need not exist: a 404 is the bucket,
            # whatever the body says (or lacks). The row waits for it rather than failing.
            return PermanentError(
                f"Storage refused the {action}: the bucket does not exist.", kind=STORAGE_SETUP
            )
        if code in {"NoSuchKey", "NotFound"} or (status == 404 and action == "download"):
            return PermanentError("The source image was not found in Storage.")
        if code == "EntityTooLarge" or status == 413:
            return PermanentError(
                f"Storage refused the {action}: the file is larger than the bucket accepts.",
                kind=BUCKET_LIMIT,
            )
        if code == "InvalidMimeType" or status == 415:
            return PermanentError(
                f"Storage refused the {action}: the bucket does not accept files of type {content_type}.",
                kind=BUCKET_LIMIT,
            )
        label = f"HTTP {status}" + (f" {code}" if code and code != str(status) else "")
        if status >= 500 or status in {408, 429} or code in _TRANSIENT_CODES:
            return TransientError(f"Storage failed the {action} for now ({label}).")
        reason = (
            (_ACCESS_DENIED_BECAUSE.get(message) if code == "AccessDenied" else None)
            or _REFUSALS.get(code)
            or ("access denied" if status == 403 else label)
        )
        setup = code in _SETUP_REFUSALS or status == 403
        return PermanentError(
            f"Storage refused the {action}: {reason}.", kind=STORAGE_SETUP if setup else None
        )
    if isinstance(exc, _TIMEOUTS):
        return TransientError(f"Storage did not answer the {action} in time.")
    if isinstance(exc, botocore.exceptions.EndpointConnectionError):
        return TransientError(f"Storage could not be reached for the {action}.")
    if isinstance(exc, _MISUSE):
        return PermanentError(
            f"The {action} could not be sent to Storage ({type(exc).__name__}).", kind=STORAGE_SETUP
        )
    if isinstance(exc, botocore.exceptions.BotoCoreError | aiohttp.ClientError | ConnectionError):
        return TransientError(f"The connection to Storage broke during the {action}.")
    if isinstance(exc, OSError):
        return TransientError(f"The {action} failed on local disk: {exc.strerror or exc}.")
    return TransientError(f"Storage failed the {action} ({type(exc).__name__}).")
