"""``python -m effnet index``: DALI index files for every TFRecord shard.

For each shard ``DIR/<shard>`` writes ``OUT/<shard>.idx`` in the format of DALI's
``tfrecord2idx`` (one ``offset size`` line per record, byte-identical to it on a
valid shard), after checking every record's length and CRCs: a truncated or
corrupt shard fails naming the shard and byte offset (tfrecord2idx exits 0 and
writes a bogus last entry). An index newer than its shard and consistent with
its size is kept. ``OUT/index.json`` summarises the set: each shard's record count (checked against
the shards' manifest when there is one), and its size and modification time when verified.
"""
from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from effnet.core import layout
from effnet.core.atomic import write_json
from effnet.core.errors import UserError
from effnet.core.resources import available_cpus
from effnet.formats.record_index import index_path, read_index, shard_state, write_index
from effnet.formats.records import SPLITS
from effnet.formats.tfrecord import record_spans


def list_shards(tfrecords: str | Path) -> list[Path]:
    """The ``train-*`` and ``validation-*`` shards of a directory, sorted."""
    root = Path(tfrecords)
    if not root.is_dir():
        raise UserError(f"{root}: TFRecord directory not found")
    shards = sorted(p for split in SPLITS for p in root.glob(f"{split}-*") if p.suffix != ".idx")
    if not shards:
        raise UserError(f"{root}: no train-* or validation-* shards")
    return shards


def current_index(shard: Path, idx: Path) -> list[tuple[int, int]] | None:
    """The spans of an index newer than its shard whose records tile the shard exactly, else None."""
    try:
        if idx.stat().st_mtime_ns < shard.stat().st_mtime_ns:
            return None
        spans = read_index(idx)
    except (OSError, UserError):
        return None
    position = 0
    for offset, size in spans:
        if offset != position or size <= 0:
            return None
        position += size
    return spans if spans and position == shard.stat().st_size else None


def index_shard(shard: Path, index_dir: Path) -> tuple[dict, bool]:
    """Write (or keep) the index of one shard; return (its index.json entry, rewritten)."""
    idx = index_path(index_dir, shard)
    entry = {"index": idx.name, **shard_state(shard)}  # before reading: a change while it is read shows later
    spans = current_index(shard, idx)
    if spans is not None:
        return {"records": len(spans), **entry}, False
    spans = record_spans(shard)
    if not spans:
        raise UserError(f"{shard}: empty shard (no records)")
    write_index(idx, spans)
    return {"records": len(spans), **entry}, True


def build_indexes(tfrecords: str | Path, output: str | Path, workers: int | None = None) -> dict:
    """Index every shard in ``tfrecords`` into ``output``; return the summary written to index.json."""
    shards = list_shards(tfrecords)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(workers or min(8, available_cpus())) as pool:
        results = list(pool.map(lambda s: index_shard(s, out), shards))
    entries = {s.name: entry for s, (entry, _) in zip(shards, results)}
    manifest_path = Path(tfrecords) / layout.RECORDS_MANIFEST
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        for split in manifest["splits"].values():
            for entry in split["shards"]:
                records = entries.get(entry["file"], {}).get("records")
                if records != entry["examples"]:
                    raise UserError(f"{Path(tfrecords) / entry['file']}: {records} records, "
                                    f"but {manifest_path} lists {entry['examples']}")
    summary = {"tfrecords": str(Path(tfrecords).resolve()), "shards": entries}
    write_json(out / layout.INDEX_SUMMARY, summary)
    rewritten = sum(r for _, r in results)
    print(f"index: {len(shards)} shards, {sum(e['records'] for e in entries.values())} records; "
          f"{rewritten} indexed, {len(shards) - rewritten} already current")
    return summary


def main(args: argparse.Namespace) -> int:
    build_indexes(args.tfrecords, args.output, args.workers)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("index", help="verify every shard and write its DALI index",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tfrecords", required=True, help="directory of train-*/validation-* shards")
    p.add_argument("--output", required=True, help="directory for <shard>.idx files and index.json")
    p.add_argument("--workers", type=int, default=None, help="shards indexed in parallel (default: up to 8)")
    p.set_defaults(func=main)
