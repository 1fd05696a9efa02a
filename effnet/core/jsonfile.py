"""Reading the JSON files stages leave for each other, with errors that name the file; appending to JSON-lines
files a killed writer may have left mid-line."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import BinaryIO

from effnet.core.errors import UserError


def read(path: str | Path, absent: str) -> dict:
    """The JSON document at ``path``; UserError "PATH: ABSENT" when there is none, "PATH: unreadable: ..."
    when it cannot be read or parsed (``absent`` says what is missing and what writes it)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: {absent}") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable: {exc}") from None


def ends_mid_line(f: BinaryIO) -> bool:
    """Whether an open file's last line has no end (a writer killed mid-line): the next line must start anew."""
    if not f.seek(0, os.SEEK_END):
        return False
    f.seek(-1, os.SEEK_END)
    return f.read(1) != b"\n"
