"""Named SQL blocks (`-- name: <name>` then the statement), loaded once per file."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse_blocks(text: str) -> dict[str, str]:
    """The blocks of `text` by name; what precedes the first name line is a preamble."""
    parts = _NAME_LINE.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


@cache
def blocks(package: str, filename: str) -> dict[str, str]:
    """The named blocks of a SQL file shipped in `package`."""
    return parse_blocks(resources.files(package).joinpath(filename).read_text(encoding="utf-8"))


def query(name: str) -> str:
    """The SQL of the block called `name` in listener/adapters/postgres/queries.sql."""
    return blocks("listener.adapters.postgres", "queries.sql")[name]
