"""The house rules of the code: a core that depends on nothing, errors in one module, the playground apart."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

import listener
from listener.errors import ListenerError

PACKAGE = Path(listener.__file__).parent
CORE = (
    "generation",
    "results",
    "validation",
    "progress",
    "supervisor",
    "ports",
    "model",
    "spool",
    "storage_state",
    "reachability",
    "images",
)
# Outside systems' SDKs and clients: only adapters import them.
SDKS = frozenset({"asyncpg", "aiohttp", "aiobotocore", "botocore", "firebase_admin", "google", "httpx"})
# Modules the core may use besides its own: plain helpers with no outside system behind them.
CORE_HELPERS = frozenset(
    {
        "listener.errors",
        "listener.logs",
        "listener.redact",
        "listener.retry",
        "listener.metrics",
        "listener.glb",
        "listener.sizes",
    }
)


def module_path(name: str) -> Path | None:
    """The file of a listener module or package, None if `name` is not one."""
    relative = Path(*name.split(".")[1:])
    for candidate in (PACKAGE / relative.with_suffix(".py"), PACKAGE / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def imports_of(name: str) -> frozenset[tuple[str, bool]]:
    """What module `name` imports: (module, at module level?), function-level imports included."""
    path = module_path(name)
    assert path is not None, name
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = {id(node) for node in tree.body}
    found: set[tuple[str, bool]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {(alias.name, id(node) in top_level) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add((node.module, id(node) in top_level))
            for alias in node.names:  # `from listener.push import fcm` imports a module
                submodule = f"{node.module}.{alias.name}"
                if submodule.startswith("listener.") and module_path(submodule) is not None:
                    found.add((submodule, id(node) in top_level))
    return frozenset(found)


def reachable(start: str) -> set[str]:
    """Every module `start` imports, directly or through other listener modules."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for imported, _ in imports_of(todo.pop()):
            if imported in seen:
                continue
            seen.add(imported)
            if imported.startswith("listener.") and module_path(imported) is not None:
                todo.append(imported)
    return seen


def all_modules() -> list[str]:
    """Every module of the package, by dotted name."""
    return sorted(
        "listener." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        for path in PACKAGE.rglob("*.py")
    )


@pytest.mark.parametrize("core", CORE)
def test_the_core_imports_no_sdk_and_no_adapter(core: str) -> None:
    """The generation logic sees the world only through ports.py: fakes and real adapters fit alike."""
    allowed = {f"listener.{name}" for name in CORE} | CORE_HELPERS
    reached = reachable(f"listener.{core}")
    sdks = sorted(name for name in reached if name.split(".")[0] in SDKS)
    adapters = sorted(name for name in reached if name.startswith("listener.") and name not in allowed)
    assert (sdks, adapters) == ([], []), f"listener.{core} reaches SDKs {sdks} and adapters {adapters}"


def test_the_import_rule_catches_a_core_module_that_imports_an_adapter() -> None:
    """The walk above sees through helpers: the service, which wires adapters, breaks the rule."""
    reached = reachable("listener.service")
    assert "asyncpg" in reached and "listener.db" in reached


def test_production_code_never_imports_the_playground() -> None:
    """Only `listener demo` reaches the playground, and only when it runs."""
    offenders = []
    for name in all_modules():
        if name.startswith("listener.playground"):
            continue
        for imported, at_top in imports_of(name):
            if imported.startswith("listener.playground") and (at_top or name != "listener.cli"):
                offenders.append(f"{name} imports {imported}")
    assert offenders == []


def loaded_after(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after running `statement`."""
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(result.stdout))


def test_running_the_listener_loads_no_playground_module() -> None:
    loaded = loaded_after("import listener.cli, listener.service, listener.status")
    assert "listener.service" in loaded
    assert sorted(name for name in loaded if name.startswith("listener.playground")) == []


def test_reading_the_settings_loads_no_sdk() -> None:
    """`listener status` and `--help` read settings; they must not pay for Storage's and FCM's SDKs."""
    loaded = loaded_after("import listener.settings, listener.cli")
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
        cls for _, cls in inspect.getmembers(errors, inspect.isclass) if cls.__module__ == "listener.errors"
    ]
    assert all(issubclass(cls, ListenerError) for cls in ours)
    assert [cls.__name__ for cls in ours if cls.__name__ not in documented] == []


def test_every_module_of_the_package_is_found_by_the_walk() -> None:
    """Guards the rules above: a module the walk misses would escape them."""
    names = all_modules()
    assert {"listener.generation", "listener.push.fcm", "listener.playground.demo"} <= set(names)
    assert all(module_path(name) is not None for name in names)
    assert {m.name for m in pkgutil.iter_modules([str(PACKAGE / "push")])} >= {"fcm", "notifier", "store"}
