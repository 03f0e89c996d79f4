"""Optuna storage: URLs, defaults under the runs directory, and the lock that keeps budgets exact."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

__all__ = ["budget_lock", "default_storage_url", "open_storage"]


def default_storage_url(runs_dir: Path) -> str:
    return f"sqlite:///{(runs_dir / 'optuna.db').resolve()}"


def _sqlite_path(url: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(url[len(prefix) :]) if url.startswith(prefix) else None


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB storage for ``url``; a sqlite file gets its folder created and a generous lock timeout."""
    import optuna

    path = _sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})
    return optuna.storages.RDBStorage(url)


@contextmanager
def budget_lock(url: str) -> Iterator[None]:
    """Serialize work on a sqlite database between processes on this machine.

    Used around "count trials, then start one" (so a shared budget is exact), around creating the
    database's tables and the study, and around creating the MLflow parent run. A no-op for server
    databases, whose transactions do the work.
    """
    path = _sqlite_path(url)
    if path is None:
        yield
        return
    with open(path.with_suffix(path.suffix + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
