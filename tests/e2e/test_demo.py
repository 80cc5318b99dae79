"""`listener demo` as a user runs it: every row ends as it should, and nothing is left behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from listener.playground.simulator import SimulatorConfig

REPO = Path(__file__).resolve().parents[2]
# `#  model  kind  status  time  result`, as the summary prints it.
SUMMARY_LINE = re.compile(r"^\s*(\d+)  (.{24}) (text|image|fail|cancel)\s+(\w+)\s+([\d.]+) s  (.*)$")
EXPECTED = {"text": "completed", "image": "completed", "fail": "failed", "cancel": "cancelled"}


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary folder with a short path: PgPool puts its socket in it (at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="demo-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_demo_runs_every_row_to_its_expected_end_and_cleans_up(short_tmp: Path, tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(short_tmp), "PYTHONPATH": str(REPO)}
    env.pop("DATABASE_URL", None)  # the demo needs no setup, and must not use one that is there
    log_file = tmp_path / "listener.log"  # kept for the secrets scan of tests/e2e/conftest.py
    done = subprocess.run(
        [sys.executable, "-m", "listener", "demo", "--log-file", str(log_file)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        cwd=short_tmp,
        timeout=120,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "Traceback" not in done.stderr
    assert "\x1b[" not in out  # not a TTY: plain lines, no cursor movement
    assert '"event"' not in out  # the listener's JSON logs went to their file

    summary = out[out.index("summary:") :].splitlines()
    rows = [m.groups() for line in summary if (m := SUMMARY_LINE.match(line))]
    assert len(rows) == 6
    assert {kind for _, _, kind, *_ in rows} == set(EXPECTED)
    for _, name, kind, status, _, result in rows:
        assert status == EXPECTED[kind], (name, status, result)
        if kind in ("text", "image"):
            assert re.fullmatch(r"[0-9a-f-]{36}/generated-models/[0-9a-f-]{36}\.glb  [\d.]+ KiB", result)
        elif kind == "fail":
            assert result == SimulatorConfig().failure_message
        else:
            assert result.startswith("cancelled by its owner at ")
    assert "all 6 rows ended as expected" in out
    events = [json.loads(line) for line in log_file.read_text().splitlines()]
    pushes = [e["status"] for e in events if e["event"] == "push_logged"]
    assert sorted(pushes) == ["completed"] * 4 + ["failed"]  # no push for the owner's own cancel

    data_dir = re.search(r"\(data in (\S+)\)", out)
    assert data_dir is not None, out
    assert str(short_tmp) in data_dir[1]
    assert not Path(data_dir[1]).exists()
    still_running = subprocess.run(["pgrep", "-f", data_dir[1]], capture_output=True, check=False)
    assert still_running.returncode == 1, still_running.stdout  # no process of its Postgres is left
    assert list(short_tmp.iterdir()) == []  # neither the Postgres folder nor the spool nor the log
