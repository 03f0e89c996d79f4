"""Files written whole or not at all: the workers of one study may share an output directory, and a worker
stopped while it writes must not leave half a summary behind."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` to write; it replaces ``path`` in one step (``os.replace``) when the
    block ends without an error, and is removed otherwise. Its name keeps the suffix of ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{threading.get_ident()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` whole."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
