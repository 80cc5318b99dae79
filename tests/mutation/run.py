"""Mutation testing of the core (listener/core/) against the fast unit tier (tests/unit), with mutmut.

    pip install mutmut                  # ad hoc, into the venv: not a dependency of the project
    python -m tests.mutation.run        # minutes; prints the score and every surviving mutant

It works in a copy of the repository made in a temporary folder (mutmut writes a `mutants/`
folder and a `setup.cfg` there), so the work tree is never touched. `--keep DIR` keeps the
copy in DIR, to look closer: `cd DIR && mutmut show <name>`, `mutmut browse`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# What is mutated: every module of the core folder (the same definition the layout test and
# the README use), and the retry policy the core runs its steps under.
CORE = [
    *sorted(
        str(path.relative_to(REPO))
        for path in (REPO / "listener" / "core").glob("*.py")
        if path.name != "__init__.py"
    ),
    "listener/retry.py",
]
COPIED = ["listener", "sql", "tests", "pyproject.toml", "README.md"]
SETUP_CFG = """[mutmut]
source_paths=listener/
only_mutate=
{only}
pytest_add_cli_args_test_selection=tests/unit/
pytest_add_cli_args=-p no:cacheprovider -q -x
also_copy=
    sql/
    README.md
use_git_change_detection=false
"""


def copy_repo(dest: Path) -> None:
    """The files the unit tier reads, without caches or an earlier run's mutants."""
    ignore = shutil.ignore_patterns("__pycache__", ".hypothesis", "mutants", "*.pyc")
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=ignore)
        else:
            shutil.copy2(source, dest / name)
    only = "\n".join(f"    {path}" for path in CORE)
    (dest / "setup.cfg").write_text(SETUP_CFG.format(only=only), encoding="utf-8")


def mutmut(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mutmut", *args],
        cwd=workdir,
        text=True,
        capture_output=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keep", type=Path, help="make the copy here and keep it")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    options = parser.parse_args()
    workdir = options.keep or Path(tempfile.mkdtemp(prefix="listener-mutation-"))
    if options.keep and workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        copy_repo(workdir)
        run = mutmut(workdir, "run", "--max-children", str(options.max_children))
        if run.returncode != 0:
            print(run.stdout[-4000:], run.stderr[-4000:], sep="\n")
            return run.returncode
        mutmut(workdir, "export-cicd-stats")
        stats = json.loads((workdir / "mutants" / "mutmut-cicd-stats.json").read_text())
        results = mutmut(workdir, "results").stdout
        print(results.rstrip())
        # A mutant that made the tests time out was caught too; one no test runs was not tested.
        caught = stats["killed"] + stats.get("timeout", 0)
        tested = stats["total"] - stats.get("skipped", 0)
        print(json.dumps(stats))
        print(f"mutation score: {100 * caught / max(1, tested):.1f}% ({caught} caught of {tested} mutants)")
        return 0
    finally:
        if not options.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
