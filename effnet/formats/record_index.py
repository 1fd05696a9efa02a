"""The DALI index format shared by the index stage (writer) and the DALI input pipeline (reader).

One ``offset size`` line per record of a TFRecord shard, the format of DALI's ``tfrecord2idx``;
the index stage writes ``<index dir>/<shard>.idx`` for every shard. DALI's TFRecord reader
reads the records an index lists in the order it lists them, seeking between them, so the
pipeline also writes short-lived indexes of its own: a subset or permutation of a shard's lines.

``<index dir>/index.json`` (written last) lists every shard with its record count and the size and
modification time it had when its records were verified (``shard_state``): a reader compares them with
the shard as it finds it, and verifies a shard changed since (DALI reads records without their CRCs).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from effnet.core import jsonfile, layout
from effnet.core.atomic import write_text
from effnet.core.errors import UserError


def add_index_argument(parser: argparse.ArgumentParser) -> None:
    """``--index DIR`` of the stages that read shards (train, evaluate)."""
    parser.add_argument("--index", help="the index stage's directory of DALI indexes, which data.backend dali reads "
                                        "the shards through (default: dali-index beside --data)")


def index_path(index_dir: str | Path, shard: str | Path) -> Path:
    """Where the index of ``shard`` lives."""
    return Path(index_dir) / f"{Path(shard).name}{layout.INDEX_SUFFIX}"


def read_index(path: str | Path) -> list[tuple[int, int]]:
    """Parse an index file into ``(offset, size)`` pairs."""
    spans = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        try:
            offset, size = (int(v) for v in line.split())
        except ValueError:
            raise UserError(f"{path}:{number}: expected 'offset size', got {line!r}") from None
        spans.append((offset, size))
    return spans


def write_index(path: str | Path, spans) -> None:
    """Write ``(offset, size)`` pairs as an index file (atomically)."""
    write_text(path, "".join(f"{offset} {size}\n" for offset, size in spans))


def shard_state(shard: str | Path) -> dict:
    """What index.json records of a shard to tell a changed one: its size and modification time."""
    stat = Path(shard).stat()
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def read_summary(index_dir: str | Path) -> dict:
    """``index.json`` of an index directory; UserError naming it when the index stage has not completed."""
    return jsonfile.read(Path(index_dir) / layout.INDEX_SUMMARY,
                         "not found: the index stage has not completed here (run `python -m effnet index`)")
