"""Optuna storage: URLs, defaults under the runs directory, heartbeats, and the lock that keeps budgets exact.

Several processes (on one machine or many) may run one study. Three things make that safe:

- :func:`budget_lock` serializes "count the trials, then start one" (and the creation of tables, studies
  and MLflow parent runs) over all workers of a database: a file lock for sqlite, a PostgreSQL advisory
  lock for ``postgresql://`` URLs.
- :func:`open_storage` with a :class:`Heartbeat` makes the storage record a heartbeat for each running
  trial; a trial whose heartbeat stops (its worker was killed) is failed by the next worker that starts a
  trial, and its plan is queued again up to ``retries`` times.
- :func:`beating` records that heartbeat while a trial runs.
"""

from __future__ import annotations

import fcntl
import hashlib
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

__all__ = [
    "Heartbeat",
    "beating",
    "budget_lock",
    "default_storage_url",
    "exact_budget",
    "open_storage",
]

#: advisory lock key of the workers of one PostgreSQL database (64 bits of a fixed name's hash)
_ADVISORY_KEY = int.from_bytes(hashlib.sha256(b"orchestrator.budget").digest()[:8], "big", signed=True)


def default_storage_url(runs_dir: Path) -> str:
    return f"sqlite:///{(runs_dir / 'optuna.db').resolve()}"


def _sqlite_path(url: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(url[len(prefix) :]) if url.startswith(prefix) else None


def _is_postgres(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0] in {"postgresql", "postgres"}


def exact_budget(url: str) -> bool:
    """Whether :func:`budget_lock` serializes workers on this storage (sqlite files and PostgreSQL)."""
    return _sqlite_path(url) is not None or _is_postgres(url)


@dataclass(frozen=True)
class Heartbeat:
    """Crash detection for running trials.

    A running trial records a heartbeat every ``interval`` seconds. A trial without one for ``grace``
    seconds (default: three intervals) is failed by the next worker that starts a trial, and its plan is
    queued to run again, at most ``retries`` times per plan.
    """

    interval: int = 10
    retries: int = 1
    grace: int | None = None

    @property
    def grace_period(self) -> int:
        return self.grace if self.grace is not None else 3 * self.interval


def open_storage(url: str, heartbeat: Heartbeat | None = None) -> optuna.storages.RDBStorage:
    """An RDB storage for ``url``; a sqlite file gets its folder created and a generous lock timeout.

    With ``heartbeat``, running trials are watched as :class:`Heartbeat` says.
    """
    import optuna
    from optuna.exceptions import ExperimentalWarning

    kwargs: dict[str, object] = {}
    path = _sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    elif _is_postgres(url):
        kwargs["engine_kwargs"] = {"pool_pre_ping": True}  # survive a server restart between trials
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeats are experimental in Optuna
        if heartbeat is not None:
            kwargs["heartbeat_interval"] = heartbeat.interval
            kwargs["grace_period"] = heartbeat.grace_period
            kwargs["heartbeat_stale_trial_callback"] = optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=heartbeat.retries
            )
        try:
            return optuna.storages.RDBStorage(url, **kwargs)  # type: ignore[arg-type]
        except ImportError as exc:
            if _is_postgres(url):
                from orchestrator.errors import MissingExtraError

                raise MissingExtraError("psycopg", "postgres") from exc
            raise


@contextmanager
def budget_lock(url: str) -> Iterator[None]:
    """Serialize work on one database between processes.

    Used around "count trials, then start one" (so a shared budget is exact), around creating the
    database's tables and the study, and around creating the MLflow parent run.

    - ``sqlite:///FILE``: an exclusive ``flock`` on ``FILE.lock`` (processes on this machine).
    - ``postgresql://...``: a session-level advisory lock (``pg_advisory_lock``) on a connection of its
      own, held by the database server for the workers of every machine. A killed worker's connection
      closes and the server releases its lock.
    - anything else: no lock (an MLflow server, or a database whose budget is counted without one).
    """
    path = _sqlite_path(url)
    if path is not None:
        with open(path.with_suffix(path.suffix + ".lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    if not _is_postgres(url):
        yield
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    try:
        engine = sqlalchemy.create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    except ImportError as exc:
        from orchestrator.errors import MissingExtraError

        raise MissingExtraError("psycopg", "postgres") from exc
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": _ADVISORY_KEY})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": _ADVISORY_KEY})
    finally:
        engine.dispose()


@contextmanager
def beating(storage: optuna.storages.RDBStorage, trial_id: int, interval: float) -> Iterator[None]:
    """Record the heartbeat of one running trial every ``interval`` seconds while the block runs.

    The first heartbeat is recorded before the block starts, so a worker killed at any moment after
    that leaves a trial the others recognise as stale. A failed write (the database briefly away) is
    tried again at the next beat: one lost beat is well within the grace period.
    """

    def beat() -> None:
        while not stop.wait(interval):
            try:
                storage.record_heartbeat(trial_id)
            except Exception as exc:
                warnings.warn(f"heartbeat of trial id {trial_id} not recorded: {exc}", stacklevel=1)

    storage.record_heartbeat(trial_id)
    stop = threading.Event()
    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
