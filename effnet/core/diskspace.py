"""A full file system or an exhausted quota (ENOSPC, EDQUOT), recognised wherever a write meets it (Python's
OSError, or the text of a TensorFlow, HDF5 or zip error) and reported as one line: the path being written, the
space left on its file system and, where known, what the write needed. The stage then exits with
``EXIT_NO_SPACE``, which the launcher does not retry (the same quota fails the same way)."""
from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REASONS = {errno.ENOSPC: "no space left on its file system", errno.EDQUOT: "disk quota exceeded"}
# How the errors of libraries that do not raise OSError (TensorFlow, h5py) spell them: strerror's texts.
TEXTS = {os.strerror(code): code for code in REASONS}


class NoSpaceError(Exception):
    """Writing ``path`` met a full file system (ENOSPC) or an exhausted quota (EDQUOT)."""

    def __init__(self, path: str | Path, code: int = errno.ENOSPC, needed: int | None = None) -> None:
        self.path, self.code, self.needed = Path(path), code, needed
        super().__init__(describe(self.path, code, needed))

    def __reduce__(self):  # across processes (prepare's workers, Horovod's broadcast) with its own arguments
        return type(self), (str(self.path), self.code, self.needed)


def cause(exc: BaseException | None) -> int | None:
    """ENOSPC or EDQUOT when ``exc``, or an exception it was raised from or while handling, is one; else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, NoSpaceError):
            return exc.code
        if isinstance(exc, OSError) and exc.errno in REASONS:
            return exc.errno
        code = next((code for text, code in TEXTS.items() if text in str(exc)), None)
        if code is not None:
            return code
        exc = exc.__cause__ or exc.__context__
    return None


def as_error(exc: BaseException, path: str | Path | None = None) -> NoSpaceError | None:
    """``exc`` as a NoSpaceError naming ``path`` (else the file the error names), or None if it is another error."""
    if isinstance(exc, NoSpaceError):
        return exc
    code = cause(exc)
    if code is None:
        return None
    return NoSpaceError(path or getattr(exc, "filename", None) or "a file of this stage", code)


@contextmanager
def reported(path: str | Path, needed: int | None = None) -> Iterator[None]:
    """Raise a full disk met in the block as a NoSpaceError naming ``path`` (``needed``: the bytes the write
    needs, where known)."""
    try:
        yield
    except Exception as exc:
        code = cause(exc)
        if isinstance(exc, NoSpaceError) or code is None:
            raise
        raise NoSpaceError(path, code, needed) from None


def mount_point(path: Path) -> Path:
    """The mount point of the file system holding ``path`` (or its nearest existing parent)."""
    path = path.absolute()
    while not path.exists():
        path = path.parent
    while not os.path.ismount(path):
        path = path.parent
    return path


def describe(path: Path, code: int, needed: int | None = None) -> str:
    """The one line that reports a full disk at ``path``."""
    mount = mount_point(path)
    usage = shutil.disk_usage(mount)
    wanted = f"; this write needed about {size(needed)}" if needed else ""
    return (f"{path}: {REASONS.get(code, os.strerror(code))} ({size(usage.free)} free of {size(usage.total)} on "
            f"{mount}{wanted}); free space or raise the quota, then run the same command again: what is complete "
            "is kept")


def size(count: int) -> str:
    """``count`` bytes in the largest unit that keeps a number of at least 1 (B, KiB, MiB, GiB, TiB)."""
    value, unit = float(count), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
