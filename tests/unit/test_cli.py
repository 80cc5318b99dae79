"""The command line as a person meets it: help that says what each command reads, a version."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest

import listener


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "listener", *args],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_version_has_one_source() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"listener {listener.__version__}"
    assert version("listener") == listener.__version__


@pytest.mark.parametrize(
    ("command", "settings", "not_listed"),
    [
        ("run", ["DATABASE_URL", "SUPABASE_URL", "LISTENER_CONCURRENCY", "LISTENER_PUSH_*"], []),
        ("migrate", ["DATABASE_URL"], ["SUPABASE_URL"]),
        ("status", ["DATABASE_URL"], ["LISTENER_CONCURRENCY"]),
    ],
)
def test_each_command_describes_itself_and_lists_the_settings_it_reads(
    command: str, settings: list[str], not_listed: list[str]
) -> None:
    result = run_cli(command, "--help")
    assert result.returncode == 0
    help_text = result.stdout
    description = help_text.split("\n\n")[1]
    assert len(description.split()) >= 10, help_text
    assert [name for name in settings if name not in help_text] == []
    assert [name for name in not_listed if name in help_text] == []


def test_demo_help_names_its_options() -> None:
    result = run_cli("demo", "--help")
    assert result.returncode == 0
    assert "--rows" in result.stdout and "--keep-running" in result.stdout
