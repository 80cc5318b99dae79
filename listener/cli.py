"""The `listener` command: migrate, run, status, demo."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

import asyncpg

from listener.errors import ConfigError
from listener.logs import configure_logging, register_secret
from listener.migrate import migrate
from listener.service import serve
from listener.settings import Settings, environment, load_database_url, load_settings, redact_url

EXIT_CONFIG = 2


async def _migrate(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    if applied:
        print(f"applied {len(applied)} migration(s): {', '.join(applied)}")
    else:
        print("database is up to date")


def cmd_migrate(_: argparse.Namespace) -> int:
    """Applies sql/ to DATABASE_URL."""
    env = environment()
    database_url = load_database_url(env)
    configure_logging(env.get("LISTENER_LOG_FORMAT", "json"))
    try:
        asyncio.run(_migrate(database_url))
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"listener: migrate failed on {redact_url(database_url)}: {exc}", file=sys.stderr)
        return 1
    return 0


def register_secrets(settings: Settings) -> None:
    """Keeps the database password and the storage secret out of every log line."""
    register_secret(urlsplit(settings.database_url).password)
    register_secret(settings.storage.secret_access_key)


async def _serve_until_signalled(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            os._exit(1)  # a second signal: leave now, the leases expire by themselves
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    await serve(settings, stop)


def cmd_run(_: argparse.Namespace) -> int:
    """Serves until SIGTERM or SIGINT, then hands its work back and exits 0."""
    settings = load_settings(environment())
    configure_logging(settings.log_format)
    register_secrets(settings)
    asyncio.run(_serve_until_signalled(settings))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line, one sub-command per job."""
    parser = argparse.ArgumentParser(prog="listener", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply sql/ to DATABASE_URL").set_defaults(func=cmd_migrate)
    commands.add_parser("run", help="serve: turn pending rows into models").set_defaults(func=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one sub-command; a bad setting exits 2 with one line naming it."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"listener: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    return code
