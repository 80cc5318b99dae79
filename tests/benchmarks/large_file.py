"""Benchmark: one very large GLB through a real `listener run` process; memory growth and upload speed.

    python -m tests.benchmarks.large_file --mib 1024 --repeat 2
    python -m tests.benchmarks.large_file --quick
    python -m tests.benchmarks.large_file --server real --mib 1024 --repeat 3

The AI simulator (in a process of its own) serves a GLB of `--mib` MiB; the listener
streams it to its spool and from there to Storage in parts. Prints the listener's
resident memory before the row and its peak, and the time the row took.

`--server` picks Storage: `moto` (a local S3), `real` (the real Supabase Storage server,
built from its vendored source as the tests build it, behind its HTTPS gateway), or
`both` (the default: `real` is left out, and said so, where its source is absent).

The upload's own time is read from the row's progress: the listener writes 93 once the
files are fetched and checked, and 99 once they are uploaded (the model has no STL and no
thumbnail here, so that is the GLB alone). A trigger the benchmark adds to the table keeps
the time of each progress write.

The same number of bytes is uploaded from this process to the same S3 server and bucket
by the listener's `Storage` class directly and by boto3's `upload_file` with its default
TransferConfig (its client signs and checksums as the listener's does: path-style
addressing, checksums only where required), each once before the row and once after; the
figures are the mean speed of the two. The server's first large upload is slower than
later ones, so one upload before all of them warms it up and is not counted. The S3
server runs in a process of its own, so that no client shares its interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import boto3  # type: ignore[import-untyped, unused-ignore]
import botocore.config

from listener.adapters.postgres.migrate import migrate
from listener.adapters.storage.config import StorageConfig
from listener.adapters.storage.s3 import Storage
from listener.playground.embedded import EmbeddedPostgres
from tests.benchmarks.harness import (
    listener_env,
    listener_process,
    memory_mib,
    simulator_process,
    wait_until_ready,
    with_spread,
)
from tests.support.storage_build import build, find_source
from tests.support.storage_server import RealStorage

MIB = 1024 * 1024
GLB_TYPE = "model/gltf-binary"
ROW_TIMEOUT_S = 900.0

_LOCAL_S3 = (
    "import dataclasses, json, sys\n"
    "from listener.playground.local_s3 import LocalS3\n"
    "s3 = LocalS3()\n"
    "print(json.dumps(dataclasses.asdict(s3.start())), flush=True)\n"
    "sys.stdin.read()\n"
    "s3.stop()\n"
)

# The time of every progress write, kept by a trigger on the app's table.
_PROGRESS_MARKS = """
CREATE TABLE public.bench_progress_marks (model_id uuid, progress integer, at timestamptz);
CREATE FUNCTION public.bench_mark_progress() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.bench_progress_marks VALUES (NEW.id, NEW.progress, clock_timestamp());
    RETURN NEW;
END $$;
CREATE TRIGGER bench_mark_progress AFTER UPDATE OF progress ON public.ai_generated_models
    FOR EACH ROW WHEN (NEW.progress IS DISTINCT FROM OLD.progress)
    EXECUTE FUNCTION public.bench_mark_progress();
"""


@contextlib.asynccontextmanager
async def local_s3_process(log_path: Path) -> AsyncIterator[StorageConfig]:
    """A LocalS3 in a process of its own; yields the config pointing at it."""
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _LOCAL_S3,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
        assert process.stdin is not None and process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), 60)
            if not line:
                raise SystemExit(f"the local S3 did not start: see {log_path}")
            yield StorageConfig(**json.loads(line))
        finally:
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


def write_file(path: Path, size: int) -> None:
    """`size` bytes that do not compress: one random MiB, repeated."""
    block = random.randbytes(MIB)
    with path.open("wb") as out:
        for offset in range(0, size, MIB):
            out.write(block[: min(MIB, size - offset)])


@dataclass(frozen=True)
class Server:
    """Where the benchmark uploads: the bucket's config and the database the listener uses."""

    name: str
    storage: StorageConfig
    database_url: str


@contextlib.asynccontextmanager
async def moto_server(pg: EmbeddedPostgres, work: Path) -> AsyncIterator[Server]:
    """moto in a process of its own; the listener's tables on the embedded Postgres."""
    conn = await asyncpg.connect(pg.dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    async with local_s3_process(work / "s3.log") as s3:
        yield Server("moto", s3, pg.dsn)


@contextlib.asynccontextmanager
async def real_server(pg: EmbeddedPostgres) -> AsyncIterator[Server]:
    """The real Storage server on its own database, which holds the listener's tables too."""
    source = find_source()
    if source is None:
        raise SystemExit("the real Storage server's source is absent (see tests/support/storage_build.py)")
    real = RealStorage(await asyncio.to_thread(build, source), pg.dsn)
    await asyncio.to_thread(real.__enter__)
    # botocore here, in the listener's process and in boto3, trusts the gateway's certificate.
    os.environ["AWS_CA_BUNDLE"] = str(real.ca_file)
    try:
        await real.create_bucket("ai-models")
        yield Server("real", real.config(), real.db_url)
    finally:
        os.environ.pop("AWS_CA_BUNDLE", None)
        await asyncio.to_thread(real.stop)


def boto3_client(config: StorageConfig) -> Any:
    """A boto3 S3 client for `config`, signing and checksumming as the listener's client does."""
    return boto3.client(
        "s3",
        region_name=config.region,
        endpoint_url=config.endpoint_url,
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=config.secret_access_key,
        config=botocore.config.Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


async def upload_with_storage_class(config: StorageConfig, file: Path, key: str) -> float:
    """Seconds the listener's Storage class takes to upload `file` (then removed again)."""
    async with Storage(config) as storage:
        started = time.monotonic()
        await storage.upload_file(key, file, GLB_TYPE)
        seconds = time.monotonic() - started
        await storage.delete(key)
    return seconds


def upload_with_boto3(config: StorageConfig, file: Path, key: str) -> float:
    """Seconds boto3's `upload_file` (default TransferConfig) takes to upload `file` (then removed)."""
    client = boto3_client(config)
    started = time.monotonic()
    client.upload_file(str(file), config.bucket, key)
    seconds = time.monotonic() - started
    client.delete_object(Bucket=config.bucket, Key=key)
    client.close()
    return seconds


@dataclass(frozen=True)
class RowRun:
    """How the large row went through the listener."""

    status: str
    error_message: str | None
    file_size: int | None
    seconds: float  # from the insert until the row was seen finished
    upload_s: float | None  # from the progress write after fetching to the one after uploading
    rss_before_mib: float
    peak_rss_mib: float


async def run_row(conn: asyncpg.Connection, process: asyncio.subprocess.Process) -> RowRun:
    """Inserts the row and waits until it has finished."""
    before = memory_mib(process.pid)
    started = time.monotonic()
    await conn.execute(
        "INSERT INTO public.ai_generated_models "
        "(user_id, generation_type, prompt, model_name, storage_path, status) "
        "VALUES (gen_random_uuid(), 'text_to_3d', 'a very detailed castle', 'Castle', '', 'pending')"
    )
    row = None
    while row is None or row["status"] not in ("completed", "failed"):
        if time.monotonic() - started > ROW_TIMEOUT_S or process.returncode is not None:
            raise SystemExit("the row did not finish in time")
        await asyncio.sleep(0.5)
        row = await conn.fetchrow("SELECT status, file_size, error_message FROM public.ai_generated_models")
    seconds = time.monotonic() - started
    after = memory_mib(process.pid)
    rows = await conn.fetch(
        "SELECT progress, extract(epoch FROM at)::float8 AS at FROM public.bench_progress_marks"
    )
    marks: dict[int, float] = {row["progress"]: row["at"] for row in rows}
    upload_s = marks[99] - marks[93] if 93 in marks and 99 in marks else None
    return RowRun(
        row["status"],
        row["error_message"],
        row["file_size"],
        seconds,
        upload_s,
        before["VmRSS"],
        after["VmHWM"],
    )


@dataclass(frozen=True)
class DirectUploads:
    """Seconds the same bytes took to upload from this process, by each client."""

    storage_class_s: float
    boto3_s: float


async def direct_uploads(config: StorageConfig, file: Path) -> DirectUploads:
    """Uploads `file` with the listener's Storage class, then with boto3."""
    storage_class_s = await upload_with_storage_class(config, file, "bench/storage-class.glb")
    boto3_s = await asyncio.to_thread(upload_with_boto3, config, file, "bench/boto3.glb")
    return DirectUploads(storage_class_s, boto3_s)


async def bench(mib: int, server_name: str) -> dict[str, object]:
    size = mib * MIB
    with tempfile.TemporaryDirectory(prefix="listener-large-bench-") as tmp, EmbeddedPostgres() as pg:
        work = Path(tmp)
        server = moto_server(pg, work) if server_name == "moto" else real_server(pg)
        async with server as target:
            conn = await asyncpg.connect(target.database_url)
            try:
                await conn.execute(_PROGRESS_MARKS)
                simulator = simulator_process(
                    duration_s=1,
                    glb_size=size,
                    keep_produced=False,
                    stl_enabled=False,
                    thumbnail_enabled=False,
                )
                async with simulator as ai_url:
                    same_bytes = work / "same-size.glb"
                    await asyncio.to_thread(write_file, same_bytes, size)
                    s3 = target.storage
                    await asyncio.to_thread(upload_with_boto3, s3, same_bytes, "bench/warm-up.glb")
                    env = listener_env(
                        target.database_url,
                        ai_url,
                        work / "spool",
                        s3,
                        LISTENER_POLL_INTERVAL="0.5",
                        LISTENER_MAX_FILE_BYTES=str((mib + 64) * MIB),
                    )
                    if "AWS_CA_BUNDLE" in os.environ:
                        env["AWS_CA_BUNDLE"] = os.environ["AWS_CA_BUNDLE"]
                    async with listener_process(env, work / "listener.log") as process:
                        await wait_until_ready(env)
                        before = await direct_uploads(s3, same_bytes)
                        row = await run_row(conn, process)
                    after = await direct_uploads(s3, same_bytes)
            finally:
                await conn.close()
    return {"server": target.name, **figures(mib, row, [before, after])}


def figures(mib: int, row: RowRun, direct: list[DirectUploads]) -> dict[str, object]:
    """What one run prints: the row, the memory, and the three clients' upload speeds."""
    storage_class_mib_s = statistics.mean(mib / d.storage_class_s for d in direct)
    boto3_mib_s = statistics.mean(mib / d.boto3_s for d in direct)
    listener_mib_s = mib / row.upload_s if row.upload_s else None
    return {
        "glb_mib": mib,
        "status": row.status,
        "error_message": row.error_message,
        "file_size": row.file_size,
        "seconds": round(row.seconds, 1),
        "row_mib_s": round(mib / row.seconds, 1),
        "listener_rss_before_mib": round(row.rss_before_mib, 1),
        "listener_peak_rss_mib": round(row.peak_rss_mib, 1),
        "growth_mib": round(row.peak_rss_mib - row.rss_before_mib, 1),
        "listener_upload_s": round(row.upload_s, 2) if row.upload_s else None,
        "listener_upload_mib_s": round(listener_mib_s, 1) if listener_mib_s else None,
        "storage_class_upload_mib_s": round(storage_class_mib_s, 1),
        "boto3_upload_mib_s": round(boto3_mib_s, 1),
        "listener_vs_boto3": round(listener_mib_s / boto3_mib_s, 2) if listener_mib_s else None,
        "storage_class_vs_boto3": round(storage_class_mib_s / boto3_mib_s, 2),
        "storage_class_upload_mib_s_before_after": [round(mib / d.storage_class_s, 1) for d in direct],
        "boto3_upload_mib_s_before_after": [round(mib / d.boto3_s, 1) for d in direct],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=1024, help="size of the GLB, MiB")
    parser.add_argument("--repeat", type=int, default=1, help="runs, each from a fresh database and S3")
    parser.add_argument("--quick", action="store_true", help="a 128 MiB GLB: for CI, under a minute each")
    parser.add_argument(
        "--server", choices=["moto", "real", "both"], default="both", help="which Storage to upload to"
    )
    args = parser.parse_args()
    mib = 128 if args.quick else args.mib
    servers = ["moto", "real"] if args.server == "both" else [args.server]
    if args.server == "both" and find_source() is None:
        print("large_file: the real Storage server's source is absent; moto only", file=sys.stderr)
        servers = ["moto"]
    results = {
        name: with_spread([asyncio.run(bench(mib, name)) for _ in range(args.repeat)]) for name in servers
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
