"""The `listener` command: migrate, run, status, pause, resume, demo.

Each command imports what it needs when it runs: `--help` and `status` never load the
Storage and FCM SDKs that only `run` uses.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
import textwrap
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from listener import __version__
from listener.app.settings import SETTINGS_DOCS, Settings, environment, load_database_url, load_settings
from listener.errors import ConfigError, MigrationBlocked, MigrationRefused, StatusUnavailable
from listener.logs import configure_logging
from listener.redact import redact_url, register_secret, scrub, url_secrets

EXIT_CONFIG = 2
CONNECT_TIMEOUT_S = 10.0


async def _migrate(database_url: str, print_sql: bool) -> None:
    import asyncpg

    from listener.adapters.postgres.migrate import migrate, pending

    conn = await asyncpg.connect(database_url, timeout=CONNECT_TIMEOUT_S)
    try:
        if print_sql:
            for migration in await pending(conn):
                print(f"-- listener migration {migration.version}\n{migration.sql.rstrip()}\n")
            return
        applied = await migrate(conn)
    finally:
        await conn.close()
    if applied:
        print(f"applied {len(applied)} migration(s): {', '.join(applied)}")
    else:
        print("database is up to date")


def cmd_migrate(args: argparse.Namespace) -> int:
    """Applies sql/ to DATABASE_URL."""
    import asyncpg

    env = environment()
    database_url = load_database_url(env)
    for secret in url_secrets(database_url):
        register_secret(secret)
    configure_logging(env.get("LISTENER_LOG_FORMAT", "json"))
    try:
        asyncio.run(_migrate(database_url, args.print_sql))
    except (MigrationBlocked, MigrationRefused) as exc:
        for line in str(exc).splitlines():
            print(f"listener: {line}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"listener: migrate failed on {redact_url(database_url)}: {scrub(str(exc))}", file=sys.stderr)
        return 1
    return 0


def register_secrets(settings: Settings) -> None:
    """Keeps the passwords and keys of the settings out of every log line and error."""
    for url in (settings.database_url, settings.ai_url, settings.storage.endpoint_url):
        for secret in url_secrets(url):
            register_secret(secret)
    register_secret(settings.storage.secret_access_key)
    register_secret(settings.dashboard_token)


async def _serve_until_signalled(settings: Settings) -> None:
    from listener.app.service import serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            os._exit(1)  # a second signal: leave now, the leases expire by themselves
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    # What exists once the listener has started (the SDKs' service models, clients, sessions)
    # lives as long as the process: keep it out of the garbage collector's scans, whose pauses
    # would otherwise hold up claims by tens of milliseconds.
    await serve(settings, stop, on_started=gc.freeze)


def cmd_run(_: argparse.Namespace) -> int:
    """Serves until SIGTERM or SIGINT, then hands its work back and exits 0."""
    settings = load_settings(environment())
    configure_logging(settings.log_format)
    register_secrets(settings)
    asyncio.run(_serve_until_signalled(settings))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Runs the whole listener on embedded neighbours with a few requests; cleans up at the end."""
    from listener.playground.demo import run_demo

    return run_demo(args.rows, args.keep_running, sys.stdout, args.log_file)


def cmd_status(args: argparse.Namespace) -> int:
    """Prints counts by status, rows in flight, the oldest pending row and leases per replica."""
    from listener.app.status import read_status, render

    database_url = load_database_url(environment())
    try:
        report = asyncio.run(read_status(database_url))
    except StatusUnavailable as exc:
        print(f"listener: {exc}", file=sys.stderr)
        return 1
    print(report.to_json() if args.json else render(report))
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    """Pauses claims for every replica."""
    from listener.app.control import pause

    return _control(pause(load_database_url(environment()), args.reason))


def cmd_resume(_: argparse.Namespace) -> int:
    """Resumes claims for every replica."""
    from listener.app.control import resume

    return _control(resume(load_database_url(environment())))


def _control(action: Coroutine[Any, Any, str]) -> int:
    try:
        print(asyncio.run(action))
    except StatusUnavailable as exc:
        print(f"listener: {exc}", file=sys.stderr)
        return 1
    return 0


def _demo_rows(text: str) -> int:
    value = int(text) if text.strip().isdigit() else 0
    if not 1 <= value <= 50:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 50, got {text!r}")
    return value


def _settings_help(*names: str) -> str:
    """The epilog of a command: the environment variables it reads, with defaults."""
    docs = [doc for doc in SETTINGS_DOCS if not names or doc.name in names]
    width = max(len(doc.name) for doc in docs)
    lines = [f"  {doc.name:<{width}}  {doc.meaning} (default: {doc.default})" for doc in docs]
    return "settings (environment variables, or a .env file in the working folder):\n" + "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line, one sub-command per job."""
    parser = argparse.ArgumentParser(
        prog="listener",
        description="Turns pending rows of public.ai_generated_models into finished 3D models, exactly once.",
        epilog="`listener <command> --help` tells what a command does and which settings it reads.",
    )
    parser.add_argument("--version", action="version", version=f"listener {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(
        name: str, summary: str, description: str, epilog: str | None = None
    ) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=summary,
            description=textwrap.fill(description, width=88),
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    migrate = command(
        "migrate",
        "apply sql/ to DATABASE_URL",
        "Creates or updates the listener's schema, triggers and functions in the database. Safe to "
        "repeat; replicas that start together wait for each other. Each migration waits at most a "
        "few seconds at a time for its locks, so that the app's queries never queue long behind it.",
        _settings_help("DATABASE_URL", "LISTENER_LOG_FORMAT"),
    )
    migrate.add_argument(
        "--print-sql",
        action="store_true",
        help="print the migrations this database lacks, in order, instead of applying them",
    )
    migrate.set_defaults(func=cmd_migrate)
    command(
        "run",
        "serve: turn pending rows into models",
        "Listens for new rows, claims them, runs each to completed or failed and tells its owner. "
        "SIGTERM stops claiming, stops the rows' work and hands their leases back; exit 0.",
        _settings_help(),
    ).set_defaults(func=cmd_run)
    demo = command(
        "demo",
        "everything embedded: a few requests, progress bars to the end",
        "Starts a throwaway Postgres, a simulated AI server and a local S3, inserts a few requests as "
        "an app user would and shows them through to the end. Needs no settings and no network.",
    )
    demo.add_argument("--rows", type=_demo_rows, default=6, metavar="N", help="requests to make (1-50)")
    demo.add_argument(
        "--keep-running", action="store_true", help="after the summary, keep everything up until Ctrl-C"
    )
    demo.add_argument(
        "--log-file", type=Path, metavar="PATH", help="keep the listener's JSON log here (default: removed)"
    )
    demo.set_defaults(func=cmd_demo)
    status = command(
        "status",
        "counts by status, rows in flight, oldest pending",
        "Reads what the listener is doing from the database: rows by status, rows in flight with "
        "their progress and age, the oldest pending row and the leases each replica holds.",
        _settings_help("DATABASE_URL"),
    )
    status.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    status.set_defaults(func=cmd_status)
    pause = command(
        "pause",
        "stop claims on every replica (rows in flight go on)",
        "Stops every replica from claiming new rows, at once: they wait pending until `listener "
        "resume`. Rows in flight run to their end. Recorded, with its reason, in listener.audit.",
        _settings_help("DATABASE_URL"),
    )
    pause.add_argument("--reason", help="why, for the other operators (shown by `listener status`)")
    pause.set_defaults(func=cmd_pause)
    command(
        "resume",
        "claim again on every replica",
        "Ends a pause: every replica claims the waiting rows at once. Recorded in listener.audit.",
        _settings_help("DATABASE_URL"),
    ).set_defaults(func=cmd_resume)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one sub-command; a bad setting exits 2 with one line naming it."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        for problem in str(exc).splitlines():
            print(f"listener: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    return code
