"""A small logger that writes NVIDIA dllogger's JSON-lines format.

Each record is one line, ``DLLL `` followed by a JSON object, exactly as
dllogger's ``JSONStreamBackend`` writes it, so existing parsers of the
reference recipe's logs read ours unchanged::

    DLLL {"timestamp": "1700000000.5", "datetime": "2023-11-14 22:13:20.500000",
          "elapsedtime": "1.25", "type": "LOG", "step": [1, 20], "data": {"loss": 0.7}}
    DLLL {..., "type": "METADATA", "metric": "loss", "metadata": {"unit": "nat"}}

A readable line (``DLL <datetime> - <step> key: value ...``) goes to a text
stream as well. ``step`` is ``"PARAMETER"``, an int, or a tuple/list (JSON list).
"""
from __future__ import annotations

import contextlib
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, TextIO

from effnet.core import jsonfile
from effnet.core.diskspace import reported


class Verbosity:
    """dllogger's verbosity levels: a record is written when backend >= record."""

    OFF = -1
    DEFAULT = 0
    VERBOSE = 1


Step = str | int | tuple | list


def _format_step(step: Step) -> str:
    if isinstance(step, (tuple, list)):
        return " ".join(str(s) for s in step) if step else "()"
    return str(step)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.5g}"
    if isinstance(value, list) and len(value) > 8:  # raw series: in the JSON file, not the readable line
        return f"[{len(value)} values]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


class DLLogger:
    """Writes LOG and METADATA records to a JSON-lines file and a text stream.

    ``json_path`` may be None (no file); ``stream`` may be None (no text).
    ``verbosity`` is the level of both outputs; records above it are dropped.
    """

    def __init__(
        self,
        json_path: str | Path | None = None,
        stream: TextIO | None = sys.stdout,
        verbosity: int = Verbosity.VERBOSE,
        append: bool = True,
    ) -> None:
        self.verbosity = verbosity
        self.stream = stream
        self.start = datetime.now()
        self._file, self.path = None, json_path and Path(json_path)
        if self.path is not None:
            with reported(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                torn = False
                if append:
                    with contextlib.suppress(FileNotFoundError), open(self.path, "rb") as f:
                        torn = jsonfile.ends_mid_line(f)
                self._file = open(self.path, "a" if append else "w", encoding="utf-8")
                if torn:  # after a record a killed writer cut short: the next one on a line of its own
                    self._file.write("\n")

    def _write(self, record: dict[str, Any], text: str) -> None:
        now = datetime.now()
        head = {
            "timestamp": str(now.timestamp()),
            "datetime": str(now),
            "elapsedtime": str((now - self.start).total_seconds()),
        }
        if self.stream is not None:
            self.stream.write(f"DLL {now:%Y-%m-%d %H:%M:%S.%f} - {text}\n")
            self.stream.flush()
        if self._file is not None:
            try:
                with reported(self.path):
                    self._file.write("DLLL " + json.dumps({**head, **record}) + "\n")
                    self._file.flush()
            except Exception:
                self._abandon()  # a full disk: the file takes no more records (the stream still does)
                raise

    def _abandon(self) -> None:
        try:
            self._file.close()
        except OSError:  # the buffered rest of a record that did not fit
            pass
        self._file = None

    def log(self, step: Step, data: Mapping[str, Any], verbosity: int = Verbosity.VERBOSE) -> None:
        """Write a LOG record of ``data`` (a flat mapping of JSON values) at ``step``."""
        if verbosity > self.verbosity:
            return
        step_json = list(step) if isinstance(step, tuple) else step
        values = " ".join(f"{k}: {_format_value(v)}" for k, v in data.items())
        self._write({"type": "LOG", "step": step_json, "data": dict(data)},
                    f"{_format_step(step)} {values}".rstrip())

    def metadata(self, metric: str, metadata: Mapping[str, Any]) -> None:
        """Write a METADATA record describing ``metric`` (unit, format, ...)."""
        if self.verbosity == Verbosity.OFF:
            return
        self._write({"type": "METADATA", "metric": metric, "metadata": dict(metadata)},
                    f"METADATA {metric} {json.dumps(dict(metadata))}")

    def close(self) -> None:
        """Flush and close the JSON file."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "DLLogger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_log(path: str | Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The records of a dllogger JSON-lines file (``DLLL {...}`` lines; other lines are skipped), and the numbers
    of the record lines a killed writer cut short (left out: the last line, or any line a resumed run wrote
    after)."""
    records, cut = [], []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.startswith("DLLL "):
            continue
        try:
            records.append(json.loads(line[5:]))
        except ValueError:
            cut.append(number)
    return records, cut


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The whole records of a dllogger file (``read_log`` without saying where lines were cut short)."""
    return read_log(path)[0]
