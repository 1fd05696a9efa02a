"""Atomic file writes: a crash never leaves a half-written file under its final name."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def temporary_path(path: str | Path, pid: int) -> Path:
    """The temporary sibling that process ``pid`` writes before renaming it to ``path``."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{pid}")


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator:
    """Open a temporary sibling of ``path`` for writing; rename it to ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path, os.getpid())
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def write_text(path: str | Path, text: str) -> None:
    """Write ``text``, atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)
