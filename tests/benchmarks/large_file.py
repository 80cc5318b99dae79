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
import os
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from listener.embedded import EmbeddedPostgres, free_port
from listener.local_s3 import LocalS3
from listener.migrate import migrate

SIMULATOR = (
    "import asyncio, sys\n"
    "from listener.simulator import SimulatorConfig, serve_forever\n"
    "config = SimulatorConfig(duration_s=1, glb_size=int(sys.argv[2]), keep_produced=False,\n"
    "                         stl_enabled=False, thumbnail_enabled=False)\n"
    "asyncio.run(serve_forever('127.0.0.1', int(sys.argv[1]), config))\n"
)


def memory_mib(pid: int) -> dict[str, float]:
    """Resident memory now (VmRSS) and at its peak (VmHWM), in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values


async def bench(mib: int) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="listener-large-bench-"))
    with EmbeddedPostgres() as pg, LocalS3() as s3:
        conn = await asyncpg.connect(pg.dsn)
        await migrate(conn)
        sim_port = free_port()
        simulator = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SIMULATOR, str(sim_port), str(mib * 1024 * 1024)
        )
        storage = s3.config()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DATABASE_URL": pg.dsn,
            "AI_PYTHON_URL": f"http://127.0.0.1:{sim_port}",
            "SUPABASE_URL": storage.public_base_url,
            "STORAGE_S3_ENDPOINT": storage.endpoint_url,
            "STORAGE_S3_REGION": storage.region,
            "STORAGE_S3_ACCESS_KEY_ID": storage.access_key_id,
            "STORAGE_S3_SECRET_ACCESS_KEY": storage.secret_access_key,
            "LISTENER_POLL_INTERVAL": "0.5",
            "LISTENER_MAX_FILE_BYTES": str((mib + 64) * 1024 * 1024),
            "LISTENER_SPOOL_DIR": str(work / "spool"),
            "LISTENER_HTTP_HOST": "127.0.0.1",
            "LISTENER_HTTP_PORT": str(free_port()),
        }
        log = (work / "listener.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "listener", "run", env=env, stdout=log, stderr=log
        )
        try:
            await asyncio.sleep(3.0)
            before = memory_mib(process.pid)
            started = time.monotonic()
            await conn.execute(
                "INSERT INTO public.ai_generated_models "
                "(user_id, generation_type, prompt, model_name, storage_path, status) "
                "VALUES (gen_random_uuid(), 'text_to_3d', 'a very detailed castle', 'Castle', '', 'pending')"
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
            process.terminate()
            await process.wait()
            simulator.terminate()
            await simulator.wait()
            log.close()
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
