"""What imports what in the package, module by module and folder by folder.

    python -m tests.support.imports                                  # each folder and what it imports
    python -m tests.support.imports --tests listener.core.generation # the test files that use a module

The layout test holds the rules over these walks; this prints them for a reader.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from functools import cache
from pathlib import Path

import listener

PACKAGE = Path(listener.__file__).parent
# Outside systems' SDKs and clients: only adapters import them.
SDKS = frozenset({"asyncpg", "aiohttp", "aiobotocore", "botocore", "firebase_admin", "google", "httpx"})
# The folders of the package, each a layer of the design; modules at the top are helpers
# (errors, logs, redact, retry, metrics, sizes) with no outside system behind them.
FOLDERS = ("core", "adapters", "notify", "app", "playground")
HELPERS = "helpers"
# Top-level modules that start the app rather than help it.
ENTRY_POINTS = frozenset({"listener.__main__"})


def module_path(name: str) -> Path | None:
    """The file of a listener module or package, None if `name` is not one."""
    relative = Path(*name.split(".")[1:])
    for candidate in (PACKAGE / relative.with_suffix(".py"), PACKAGE / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def all_modules() -> list[str]:
    """Every module of the package, by dotted name."""
    return sorted(
        "listener." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        for path in PACKAGE.rglob("*.py")
    )


def folder_of(name: str) -> str:
    """The layer a listener module belongs to: its first folder, or `helpers` for a top-level module."""
    parts = name.split(".")
    if len(parts) > 2 and parts[1] in FOLDERS:
        return parts[1]
    if len(parts) == 2 and parts[1] in FOLDERS:  # the folder's own __init__
        return parts[1]
    return HELPERS


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
            for alias in node.names:  # `from listener.notify import texts` imports a module
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


def folder_imports() -> dict[str, set[str]]:
    """For each folder, the other folders and the SDKs its modules import directly."""
    found: dict[str, set[str]] = defaultdict(set)
    for name in all_modules():
        if name in ENTRY_POINTS:
            continue
        here = folder_of(name)
        for imported, _ in imports_of(name):
            root = imported.split(".")[0]
            if imported.startswith("listener.") and module_path(imported) is not None:
                if folder_of(imported) != here:
                    found[here].add(folder_of(imported))
            elif root in SDKS:
                found[here].add(root)
    return found


def files_testing(module: str) -> list[str]:
    """The test files that import `module` (or a name from it), relative to the repository."""
    root = PACKAGE.parent
    found = []
    for path in sorted((root / "tests").rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            named = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if module in named:
                found.append(str(path.relative_to(root)))
                break
    return found


def main() -> None:
    """Prints each folder and what it imports, or with `--tests MODULE` the tests of a module."""
    if len(sys.argv) == 3 and sys.argv[1] == "--tests":
        print("\n".join(files_testing(sys.argv[2])) or f"no test file imports {sys.argv[2]}")
        return
    imports = folder_imports()
    for folder in (*FOLDERS, HELPERS):
        print(f"{folder:<11} -> {', '.join(sorted(imports.get(folder, ()))) or '(nothing)'}")


if __name__ == "__main__":
    main()
