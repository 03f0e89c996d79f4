"""A throwaway PostgreSQL server for the tests, on a free loopback port, stopped at the end of the session.

When the server binaries are missing and the tests run as root, Debian's ``postgresql`` package is
installed first (``apt-get install -y postgresql``; its binaries land in ``/usr/lib/postgresql/N/bin``).
``initdb`` refuses to run as root, so as root the cluster belongs to the ``postgres`` user the package
creates. When PostgreSQL cannot be had, the tests that need it fail under CI (``CI=true``) and are
skipped elsewhere, with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

__all__ = ["PostgresServer", "postgres"]

_USER = "postgres"  # the database superuser, and the system user owning the cluster when we are root


@dataclass(frozen=True)
class PostgresServer:
    port: int
    root: Path

    def url(self, database: str) -> str:
        """A SQLAlchemy URL of ``database`` (psycopg 3, the default driver of ``postgresql://``)."""
        return f"postgresql://{_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"PostgreSQL is required under CI: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL unavailable: {reason}")


def _bin_dir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]), reverse=True
    )
    return versions[0].parent if versions else None


def _install() -> None:
    """``apt-get install -y postgresql`` (as root on Debian); the output goes into the failure message."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        _unavailable("initdb not found; install PostgreSQL (on Debian: apt-get install -y postgresql)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "postgresql"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            _unavailable(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A running PostgreSQL server with trust authentication for ``postgres`` on 127.0.0.1."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("the psycopg driver is not installed: pip install -e '.[postgres]'")
    bin_dir = _bin_dir()
    if bin_dir is None:
        _install()
        bin_dir = _bin_dir()
        if bin_dir is None:
            _unavailable("apt-get installed postgresql but no initdb was found")
    root = Path(tempfile.mkdtemp(prefix="orchestrator-postgres-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, user=_USER)
        as_owner = ["runuser", "-u", _USER, "--"]
    data, log = root / "data", root / "server.log"
    port = _free_port()
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    try:
        initdb = [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", _USER, "--no-sync"]
        start = [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start"]
        for command in (initdb, start):
            done = subprocess.run([*as_owner, *command], capture_output=True, text=True, timeout=120)
            if done.returncode != 0:
                server_log = log.read_text() if log.exists() else ""
                _unavailable(f"{command[0]} failed:\n{done.stdout}{done.stderr}{server_log[-2000:]}")
        yield PostgresServer(port=port, root=root)
    finally:
        if (data / "postmaster.pid").exists():
            stop = [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
            subprocess.run([*as_owner, *stop], capture_output=True, timeout=60, check=False)
        with contextlib.suppress(OSError):
            shutil.rmtree(root)
