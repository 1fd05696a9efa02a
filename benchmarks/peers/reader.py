"""The DALI input's host side: encoded records delivered to DALI per second by one rank, no decoding.

Writes ImageNet-sized records (``--record-kb``, 110 KB by default: random bytes as ``image/encoded``; nothing
is decoded), indexes them, then measures in alternating rounds, each over one epoch of the records:

- ours: the epoch's reading order planned in Python (``effnet.data.dali.reading_order``: every span permuted)
  and written as index files, then DALI's TFRecord reader following them (what ``effnet.data.dali`` runs);
- DALI's TFRecord reader as its documentation shows it: the index stage's files, ``random_shuffle`` with a
  buffer of ``initial_fill`` records;
- the previous design: tf.data reading the records and handing each one to ``DALIDatasetWithInputs``
  (``Input(batch=False)``), the per-sample path the TF plugin offers for a Python- or tf.data-fed input.

Each rate counts the records that leave the pipeline (a batch of labels and sizes) per wall second, pipeline
construction and, for ours, planning and index writing included. The pipelines use ``--threads`` threads.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.peers.options import add_timing
from effnet.core import layout


def write_records(root: Path, count: int, record_kb: int, shards: int = 8) -> Path:
    """``count`` records of about ``record_kb`` KB in ``shards`` train shards, a manifest and their indexes."""
    import numpy as np

    from effnet.core.atomic import write_json
    from effnet.formats.records import FORMAT, LABEL_OFFSET, encode_example
    from effnet.formats.tfrecord import encode_record
    from effnet.stages.index import build_indexes

    rng = np.random.default_rng(0)
    rec = root / "rec"
    rec.mkdir(parents=True)
    entries = []
    for shard in range(shards):
        name = f"train-{shard:05d}-of-{shards:05d}"
        n = count // shards + (shard < count % shards)
        with open(rec / name, "wb") as f:
            for i in range(n):
                payload = rng.integers(0, 256, record_kb * 1024, dtype=np.uint8).tobytes()
                f.write(encode_record(encode_example(payload, 375, 500, i % 10, f"c{i % 10}", f"class {i % 10}",
                                                     f"{name}-{i}.jpg")))
        entries.append({"file": name, "examples": n, "bytes": (rec / name).stat().st_size})
    write_json(rec / layout.RECORDS_MANIFEST, {"format": FORMAT, "num_classes": 10, "label_offset": LABEL_OFFSET,
                                "classes": [{"id": f"c{i}", "name": f"class {i}"} for i in range(10)],
                                "splits": {"train": {"examples": count, "shards": entries}}})
    build_indexes(rec, root / layout.INDEX)
    return rec


def _run(pipe, batches: int, batch_size: int) -> int:
    for _ in range(batches):
        pipe.run()
    return batches * batch_size


def ours(rec: Path, batch: int, threads: int, epoch: int) -> int:
    from nvidia.dali import pipeline_def

    from effnet.data import dali, sharding
    from effnet.data.pipeline import default_index_dir

    (plan,) = sharding.plan_epochs(rec, "train", training=True, batch_size=batch, epochs=range(epoch, epoch + 1))
    runs = dali.reading_order(plan, dali.shard_indexes([plan], default_index_dir(rec)),
                              shuffle_seed=epoch, records=plan.steps * batch)
    with tempfile.TemporaryDirectory() as tmp:
        files, indexes = dali.write_indexes(runs, tmp)

        @pipeline_def(batch_size=batch, num_threads=threads, device_id=None)
        def pipeline():
            encoded, labels = dali.read_records(files, indexes, plan.label_offset)
            return labels, encoded.shape()

        pipe = pipeline()
        pipe.build()
        return _run(pipe, plan.steps, batch)


def stock(rec: Path, batch: int, threads: int, epoch: int, initial_fill: int = 1024) -> int:
    from nvidia.dali import fn, pipeline_def, tfrecord

    from effnet.data.pipeline import default_index_dir
    from effnet.formats.record_index import index_path

    files = sorted(str(p) for p in rec.glob("train-*"))

    @pipeline_def(batch_size=batch, num_threads=threads, device_id=None, seed=epoch)
    def pipeline():
        inputs = fn.readers.tfrecord(
            path=files, index_path=[str(index_path(default_index_dir(rec), f)) for f in files],
            random_shuffle=True, initial_fill=initial_fill, name="reader", features={
                "image/encoded": tfrecord.FixedLenFeature((), tfrecord.string, ""),
                "image/class/label": tfrecord.FixedLenFeature([1], tfrecord.int64, -1)})
        return inputs["image/class/label"], inputs["image/encoded"].shape()

    pipe = pipeline()
    pipe.build()
    return _run(pipe, pipe.epoch_size("reader") // batch, batch)


def per_sample(rec: Path, batch: int, threads: int, epoch: int) -> int:
    import tensorflow as tf
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.tf.experimental import DALIDatasetWithInputs, Input

    files = sorted(str(p) for p in rec.glob("train-*"))
    count = sum(1 for f in files for _ in tf.data.TFRecordDataset(f)) // batch * batch
    features = {"image/encoded": tf.io.FixedLenFeature((), tf.string)}
    examples = tf.data.TFRecordDataset(files).map(
        lambda r: tf.io.decode_raw(tf.io.parse_single_example(r, features)["image/encoded"], tf.uint8),
        num_parallel_calls=tf.data.AUTOTUNE)

    @pipeline_def(batch_size=batch, num_threads=threads, device_id=None)
    def pipeline():
        encoded = fn.external_source(name="example", dtype=types.UINT8, ndim=1, layout="")
        return encoded.shape()

    pipe = pipeline()
    pipe.build()
    with tf.device("/cpu:0"):
        ds = DALIDatasetWithInputs(pipeline=pipe, input_datasets={"example": Input(examples, batch=False)},
                                   batch_size=batch, device_id=None, output_shapes=((batch, 1),),
                                   output_dtypes=(tf.int64,))
        for _ in ds.take(count // batch):
            pass
    return count


def run(args: argparse.Namespace) -> int:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="effnet-peers-reader-"))
    rec = work / "rec" if (work / "rec" / layout.RECORDS_MANIFEST).exists() else write_records(work, args.records,
                                                                                         args.record_kb)
    options = {"ours: planned order + DALI reader": ours, "DALI reader, random_shuffle": stock,
               "before: tf.data -> DALI per sample": per_sample}
    rates: dict[str, list[float]] = {name: [] for name in options}
    for name, fn in options.items():  # warm up: imports, first builds, the page cache
        fn(rec, args.batch_size, args.threads, 0)
    for r in range(args.rounds):
        for name, fn in options.items():
            start = time.perf_counter()
            n = fn(rec, args.batch_size, args.threads, r + 1)
            rates[name].append(n / (time.perf_counter() - start))
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    print(f"\nHost side of one rank's DALI input: {args.records} records of {args.record_kb} KB, batch "
          f"{args.batch_size}, {args.threads} threads; records per second, every round and the median:")
    for name, values in rates.items():
        print(f"  {name:36s} {' '.join(f'{v:8.0f}' for v in values)}   median {statistics.median(values):8.0f}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("reader", help="records per second the DALI input's host side delivers",
                              description=__doc__)
    add_timing(p, batch_size=256, rounds=3)
    p.add_argument("--records", type=int, default=4096)
    p.add_argument("--record-kb", type=int, default=110)
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=run)
