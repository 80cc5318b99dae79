"""Every named statement in queries.sql exists where it is asked for, and is asked for somewhere."""

from __future__ import annotations

import ast
from pathlib import Path

import listener
from listener.adapters.postgres.queries import blocks, parse_blocks

PACKAGE = Path(listener.__file__).parent
# Callables whose first argument names a statement of queries.sql.
RUNNERS = frozenset({"query", "fetch", "fetchrow", "execute", "_updated", "_demo_query"})


def string_constants(paths: list[Path]) -> dict[str, list[str]]:
    """Every string literal in `paths`, with where it appears."""
    found: dict[str, list[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.setdefault(node.value, []).append(f"{path.name}:{node.lineno}")
    return found


def named_by_runners(paths: list[Path]) -> dict[str, str]:
    """The statement names passed as a literal first argument to a query runner."""
    named: dict[str, str] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
                continue
            func = node.func
            callee = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if callee in RUNNERS and isinstance(node.args[0].value, str):
                named[node.args[0].value] = f"{path.name}:{node.lineno}"
    return named


def production_modules() -> list[Path]:
    return [path for path in PACKAGE.rglob("*.py") if "playground" not in path.parts]


def test_every_statement_of_queries_sql_is_used() -> None:
    statements = blocks("listener.adapters.postgres", "queries.sql")
    used = string_constants(production_modules())
    assert sorted(name for name in statements if name not in used) == []


def test_every_statement_asked_for_exists() -> None:
    statements = blocks("listener.adapters.postgres", "queries.sql")
    asked = named_by_runners(production_modules())
    assert len(asked) >= 10, "the scan found too few query calls to be trusted"
    assert {name: where for name, where in asked.items() if name not in statements} == {}


def test_every_demo_statement_is_used_and_exists() -> None:
    statements = blocks("listener.playground", "demo.sql")
    demo = [PACKAGE / "playground" / "demo.py"]
    used = string_constants(demo)
    assert sorted(name for name in statements if name not in used) == []
    asked = named_by_runners(demo)
    assert asked, "the scan found no demo query call"
    assert {name: where for name, where in asked.items() if name not in statements} == {}


def test_blocks_are_split_at_name_lines_only() -> None:
    text = "-- preamble\n-- name: one\nSELECT 1;\n-- a comment\n-- name: two\nSELECT\n  2;\n"
    assert parse_blocks(text) == {"one": "SELECT 1;\n-- a comment", "two": "SELECT\n  2;"}
