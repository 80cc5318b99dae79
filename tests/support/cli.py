"""The `listener` command as an operator runs it: a process of its own, with only DATABASE_URL set."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


async def run_listener(database_url: str, *args: str, cwd: Path) -> tuple[int, str, str]:
    """`python -m listener ARGS`; returns (exit status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "listener",
        *args,
        env={"DATABASE_URL": database_url, "PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO)},
        cwd=cwd,  # no stray .env
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
