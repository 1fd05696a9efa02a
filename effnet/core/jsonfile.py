"""Reading the JSON files stages leave for each other, with errors that name the file."""
from __future__ import annotations

import json
from pathlib import Path

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
