"""Atomic writes of files and folders: a crash never leaves a half-written one under its final name, and a full
disk or quota met while writing is raised as ``NoSpaceError`` naming the final name (the temporary one removed)."""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from effnet.core.diskspace import reported


def temporary_path(path: str | Path, pid: int) -> Path:
    """The temporary sibling that process ``pid`` writes before renaming it to ``path`` (same suffix, for writers
    that choose a format by it)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{pid}{path.suffix}")


@contextmanager
def atomic_path(path: str | Path, needed: int | None = None) -> Iterator[Path]:
    """A temporary sibling of ``path`` for the block to write; renamed to ``path`` if the block succeeds.
    ``needed``: the bytes the write needs, where known (a full disk's message names them)."""
    path = Path(path)
    tmp = temporary_path(path, os.getpid())
    with reported(path, needed):  # outermost: the space it reports is what is left once the temporary is gone
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator:
    """Open a temporary sibling of ``path`` for writing; synced and renamed to ``path`` if the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def atomic_directory(path: str | Path, needed: int | None = None) -> Iterator[Path]:
    """A new, empty temporary sibling folder of ``path`` for the block to fill; if the block succeeds it replaces
    ``path`` whole (an earlier ``path`` is set aside, then removed). ``needed`` as for ``atomic_path``."""
    path = Path(path)
    tmp = temporary_path(path, os.getpid())
    shutil.rmtree(tmp, ignore_errors=True)
    with reported(path, needed):
        try:
            tmp.mkdir(parents=True)
            yield tmp
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            if path.exists():
                os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def write_text(path: str | Path, text: str) -> None:
    """Write ``text``, atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)
