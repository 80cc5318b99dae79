"""Benchmark: one very large GLB through a real `listener run` process; prints its memory growth.

    python -m tests.benchmarks.large_file --mib 1024

The AI simulator (in a process of its own) serves a GLB of `--mib` MiB; the listener
streams it to its spool and from there to the local S3 in parts. Prints the listener's
resident memory before the row and its peak, and the time the row took.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import asyncpg

from listener.migrate import migrate
from listener.playground.embedded import EmbeddedPostgres
from listener.playground.local_s3 import LocalS3
from tests.benchmarks.harness import listener_env, listener_process, memory_mib, simulator_process


async def bench(mib: int) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="listener-large-bench-"))
    with EmbeddedPostgres() as pg, LocalS3() as s3:
        conn = await asyncpg.connect(pg.dsn)
        await migrate(conn)
        simulator = simulator_process(
            duration_s=1,
            glb_size=mib * 1024 * 1024,
            keep_produced=False,
            stl_enabled=False,
            thumbnail_enabled=False,
        )
        try:
            async with simulator as ai_url:
                env = listener_env(
                    pg.dsn,
                    ai_url,
                    work / "spool",
                    s3.config(),
                    LISTENER_POLL_INTERVAL="0.5",
                    LISTENER_MAX_FILE_BYTES=str((mib + 64) * 1024 * 1024),
                )
                async with listener_process(env, work / "listener.log") as process:
                    await asyncio.sleep(3.0)
                    before = memory_mib(process.pid)
                    started = time.monotonic()
                    await conn.execute(
                        "INSERT INTO public.ai_generated_models "
                        "(user_id, generation_type, prompt, model_name, storage_path, status) "
                        "VALUES (gen_random_uuid(), 'text_to_3d', 'a very detailed castle', 'Castle', '', "
                        "'pending')"
                    )
                    row = None
                    while row is None or row["status"] not in ("completed", "failed"):
                        if time.monotonic() - started > 900:
                            raise SystemExit("the row did not finish in time")
                        await asyncio.sleep(0.5)
                        row = await conn.fetchrow(
                            "SELECT status, file_size, error_message FROM public.ai_generated_models"
                        )
                    seconds = time.monotonic() - started
                    after = memory_mib(process.pid)
        finally:
            await conn.close()
    return {
        "glb_mib": mib,
        "status": row["status"],
        "error_message": row["error_message"],
        "file_size": row["file_size"],
        "seconds": round(seconds, 1),
        "listener_rss_before_mib": round(before["VmRSS"], 1),
        "listener_peak_rss_mib": round(after["VmHWM"], 1),
        "growth_mib": round(after["VmHWM"] - before["VmRSS"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=1024, help="size of the GLB, MiB")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(args.mib)), indent=2))


if __name__ == "__main__":
    main()
