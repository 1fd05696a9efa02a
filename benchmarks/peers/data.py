"""Data-stage benchmark: prepare images/s against copying the same JPEGs with ``cat``, and index
seconds per shard against DALI's ``tfrecord2idx``.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> int:
    from benchmarks.peers.input import write_images
    from effnet.core.resources import default_workers
    from effnet.stages.index import build_indexes
    from effnet.stages.prepare import prepare
    from effnet.stages.prepare.write import WORKER_MEMORY

    workers = args.workers or default_workers(WORKER_MEMORY["files"])
    work = Path(tempfile.mkdtemp(prefix="effnet-bench-data-"))
    write_images(work / "images", args.images)
    files = sorted(str(p) for p in (work / "images").rglob("*.jpg"))
    megabytes = sum(Path(f).stat().st_size for f in files) / 1e6
    subprocess.run(["sync"], check=True)

    def cat():
        with open(work / "cat.out", "wb") as out:
            subprocess.run(["cat", *files], stdout=out, check=True)
    cat_s = min(_timed(cat) for _ in range(3))
    prepare_s = _timed(lambda: prepare("folders", str(work / "images"), str(work / "rec"),
                                       train_shards=args.shards, val_shards=1, workers=workers))
    shutil.rmtree(work / "idx", ignore_errors=True)
    index_s = _timed(lambda: build_indexes(work / "rec", work / "idx"))
    shards = sorted((work / "rec").glob("train-*"))
    tfrecord2idx = Path(sys.executable).with_name("tfrecord2idx")
    t2i_s = _timed(lambda: [subprocess.run([str(tfrecord2idx), str(s), str(work / "t.idx")], check=True,
                                           capture_output=True) for s in shards])
    n = len(files)
    print(f"\n{n} JPEGs, {megabytes:.1f} MB, {workers} workers:")
    print(f"  cat (copy, physical limit)   {n / cat_s:9.0f} img/s   {megabytes / cat_s:7.1f} MB/s")
    print(f"  prepare (decode-check, write) {n / prepare_s:8.0f} img/s   {megabytes / prepare_s:7.1f} MB/s"
          f"   ({prepare_s:.1f} s incl. worker start-up)")
    print(f"  index                         {index_s / (len(shards) + 1) * 1000:8.1f} ms/shard (all shards verified)")
    print(f"  tfrecord2idx                  {t2i_s / len(shards) * 1000:8.1f} ms/shard")
    shutil.rmtree(work)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="prepare img/s vs cat, index ms/shard vs tfrecord2idx",
                              description=__doc__)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--workers", type=int, default=None, help="default: all cores")
    p.set_defaults(func=run)
