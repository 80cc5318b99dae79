"""The house rules of the code: a core that depends on nothing, errors in one module, the playground apart."""

from __future__ import annotations

import importlib
import inspect
import json
import re
import subprocess
import sys

import pytest

from listener.errors import ListenerError
from tests.support.imports import (
    ENTRY_POINTS,
    HELPERS,
    PACKAGE,
    SDKS,
    all_modules,
    files_testing,
    folder_of,
    imports_of,
    module_path,
    reachable,
)

# What each folder may import besides itself and the helpers: the core sees nothing of the
# world, notify sees the core, adapters implement the core's and notify's ports, and only
# the app wires adapters together (the playground is the demo's own and may use anything).
MAY_IMPORT = {
    "core": frozenset(),
    "notify": frozenset({"core"}),
    "adapters": frozenset({"core", "notify"}),
    "app": frozenset({"core", "notify", "adapters"}),
    HELPERS: frozenset(),
}
CORE = sorted(name for name in all_modules() if folder_of(name) == "core" and name != "listener.core")


@pytest.mark.parametrize("folder", sorted(MAY_IMPORT))
def test_each_folder_imports_only_the_folders_below_it(folder: str) -> None:
    """The tree is the architecture: core, then notify, then adapters, then the app."""
    allowed = MAY_IMPORT[folder] | {folder, HELPERS}
    wrong = []
    for name in all_modules():
        if folder_of(name) != folder or name in ENTRY_POINTS:
            continue
        for imported, at_top in imports_of(name):
            if not imported.startswith("listener.") or module_path(imported) is None:
                continue
            lazy_demo = name == "listener.app.cli" and folder_of(imported) == "playground" and not at_top
            if folder_of(imported) not in allowed and not lazy_demo:
                wrong.append(f"{name} imports {imported}")
    assert wrong == []


@pytest.mark.parametrize("core", CORE)
def test_the_core_reaches_no_sdk(core: str) -> None:
    """The generation logic sees the world only through core/ports.py: fakes and real adapters fit alike."""
    sdks = sorted(name for name in reachable(core) if name.split(".")[0] in SDKS)
    assert sdks == [], f"{core} reaches SDKs {sdks}"


def test_notify_reaches_no_sdk() -> None:
    """The notifier sees its ledger and its senders through ports: another channel is another adapter."""
    reached = set().union(*(reachable(name) for name in all_modules() if folder_of(name) == "notify"))
    assert sorted(name for name in reached if name.split(".")[0] in SDKS) == []


def test_the_import_rules_catch_a_module_that_breaks_them() -> None:
    """The walk above sees through modules: the service, which wires adapters, reaches SDKs."""
    reached = reachable("listener.app.service")
    assert "asyncpg" in reached and "listener.adapters.postgres.jobs" in reached
    assert folder_of("listener.adapters.storage.s3") == "adapters" and folder_of("listener.errors") == HELPERS


def test_every_module_of_the_core_has_a_test_that_imports_it() -> None:
    """A module's tests are found from the module: `python -m tests.support.imports --tests MODULE`."""
    untested = [name for name in CORE if not files_testing(name)]
    assert untested == []


def drawn_tree(readme: str) -> set[str]:
    """The files and folders the README's layout draws under `listener/`, as paths relative to it.

    Each line is indented two spaces per folder level, names its entries (`x.py`, `x.sql`,
    `folder/`) first and says what they hold after them.
    """
    drawing = readme.split("## How the code is laid out", 1)[1].split("```", 2)[1]
    lines = iter(drawing.strip("\n").splitlines())
    assert next(lines) == "listener/"
    entry = re.compile(r"[\w-]+(?:\.py|\.sql|/)")
    folders: list[str] = []
    drawn: set[str] = set()
    for line in lines:
        depth = (len(line) - len(line.lstrip(" "))) // 2
        if depth == 0:
            break  # past listener/
        names = []
        for word in line.split():
            if not entry.fullmatch(word):
                break
            names.append(word)
        folders = folders[: depth - 1]
        for name in names:
            drawn.add("/".join([*folders, name]))
            if name.endswith("/"):
                folders.append(name.rstrip("/"))
    return drawn


def test_the_readme_draws_the_tree_as_it_is() -> None:
    """Every module, SQL file and folder of the package is drawn in the README's layout, where it is."""
    on_disk = {
        str(path.relative_to(PACKAGE)) + ("/" if path.is_dir() else "")
        for path in PACKAGE.rglob("*")
        if "__pycache__" not in path.parts
        and "static" not in path.parts
        and path.name != "__init__.py"
        and (path.is_dir() or path.suffix in (".py", ".sql"))
    }
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    drawn = drawn_tree(readme)
    assert (sorted(on_disk - drawn), sorted(drawn - on_disk)) == ([], [])


def test_production_code_never_imports_the_playground() -> None:
    """Only `listener demo` reaches the playground, and only when it runs."""
    offenders = []
    for name in all_modules():
        if name.startswith("listener.playground"):
            continue
        for imported, at_top in imports_of(name):
            if imported.startswith("listener.playground") and (at_top or name != "listener.app.cli"):
                offenders.append(f"{name} imports {imported}")
    assert offenders == []


def loaded_after(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after running `statement`."""
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(result.stdout))


def test_running_the_listener_loads_no_playground_module() -> None:
    loaded = loaded_after("import listener.app.cli, listener.app.service, listener.app.status")
    assert "listener.app.service" in loaded
    assert sorted(name for name in loaded if name.startswith("listener.playground")) == []


def test_reading_the_settings_loads_no_sdk() -> None:
    """`listener status` and `--help` read settings; they must not pay for Storage's and FCM's SDKs."""
    loaded = loaded_after("import listener.app.settings, listener.app.cli")
    assert sorted(name for name in loaded if name.split(".")[0] in SDKS | {"prometheus_client"}) == []


def test_every_exception_of_the_listener_lives_in_errors_py() -> None:
    """One tree of errors, drawn in errors.py's docstring; none hides in an adapter."""
    stray = []
    documented = inspect.getdoc(importlib.import_module("listener.errors")) or ""
    for name in all_modules():
        if name.startswith("listener.playground") or name == "listener.__main__":
            continue
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == name and name != "listener.errors":
                stray.append(f"{name}.{cls.__name__}")
    assert stray == []
    errors = importlib.import_module("listener.errors")
    ours = [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if cls.__module__ == "listener.errors" and issubclass(cls, BaseException)
    ]
    assert all(issubclass(cls, ListenerError) for cls in ours)
    assert [cls.__name__ for cls in ours if cls.__name__ not in documented] == []


def test_every_module_of_the_package_is_found_by_the_walk() -> None:
    """Guards the rules above: a module the walk misses would escape them."""
    names = all_modules()
    assert {"listener.core.generation", "listener.adapters.fcm", "listener.playground.demo"} <= set(names)
    assert all(module_path(name) is not None for name in names)
    assert {"listener.notify.notifier", "listener.adapters.postgres.push_store"} <= set(names)
