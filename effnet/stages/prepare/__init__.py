"""``python -m effnet prepare``: write (or validate) TFRecord shards and their manifest.

Output, in the reference ImageNet layout::

    DIR/train-00000-of-01024 ...  DIR/validation-00000-of-00128 ...
    DIR/manifest.json   per-shard counts, bytes, sha256; classes; source and options
    DIR/labels.txt      one line per class index: ``index<TAB>id<TAB>name``
    DIR/prepare.dllog.json  options and throughput of each run, in dllogger's JSON-lines format

The record format is ``effnet.formats.records``: tf.train.Example records with Google's ImageNet
converter's keys; labels are 1-based on disk (class index + 1), and the manifest's
``label_offset`` says so. Listing the sources is ``sources``, cutting
them into shard tasks ``plan``, and writing the shards in worker processes ``write``.
Shards are written to temporary files and renamed when complete; a rerun after a kill
writes only the shards that are missing or whose inputs changed.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

from effnet.core import layout
from effnet.core.atomic import write_json, write_text
from effnet.core.errors import UserError
from effnet.core.resources import default_workers
from effnet.formats.dllog import DLLogger
from effnet.formats.records import FORMAT, LABEL_OFFSET, SPLITS
from effnet.stages.prepare import plan as planning
from effnet.stages.prepare import sources
from effnet.stages.prepare.write import WORKER_MEMORY, remove_temporaries, run_tasks


def prepare(source: str, input_dir: str, output_dir: str, *, val_labels: str | None = None,
            synsets: str | None = None, tfds_name: str | None = None, train_shards: int = 1024,
            val_shards: int = 128, workers: int | None = None, seed: int = 0,
            skip_corrupt: bool = False) -> dict:
    """Write or validate the shards of ``source`` into ``output_dir``; return the manifest."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_temporaries(out)  # left by a run that was killed
    workers = workers or default_workers(WORKER_MEMORY["tfds" if source == "tfds" else "files"])
    shards = {"train": train_shards, "validation": val_shards}
    options = {"seed": seed, "train_shards": train_shards, "val_shards": val_shards, "skip_corrupt": skip_corrupt,
               "val_labels": val_labels, "synsets": synsets, "tfds_name": tfds_name}
    classes, tasks, ignored, total = _plan(source, input_dir, out, shards, options)
    start = time.perf_counter()
    entries, processed = run_tasks(tasks, workers, total)
    seconds = time.perf_counter() - start
    label_offset = LABEL_OFFSET
    if source == "tfrecords":
        classes, label_offset = planning.classes_from_labels(entries)
    manifest = {
        "format": FORMAT,
        "source": {"kind": source, "input": str(Path(input_dir).resolve()), **options},
        "label_offset": label_offset,
        "num_classes": len(classes),
        "classes": [asdict(c) for c in classes],
        "splits": {
            split: {"examples": sum(e["examples"] for e, t in zip(entries, tasks) if t.split == split),
                    "shards": [e for e, t in zip(entries, tasks) if t.split == split]}
            for split in SPLITS
        },
        "converted": sum(e["converted"] for e in entries),
        "skipped": [s for e in entries for s in e["skipped"]],
        "ignored_files": ignored,
    }
    _write_outputs(out, manifest, classes, workers, processed, seconds)
    return manifest


def _plan(source: str, input_dir: str, out: Path, shards: dict, options: dict) -> tuple:
    """(classes, shard tasks, ignored files, examples to write) of ``source``; the classes of a tfrecords source
    are read from its shards as they are checked (None here)."""
    seed, skip_corrupt = options["seed"], options["skip_corrupt"]
    if source in ("imagenet", "folders"):
        listing = (sources.list_imagenet(input_dir, options["val_labels"], options["synsets"]) if source == "imagenet"
                   else sources.list_folders(input_dir, options["synsets"]))
        tasks = planning.plan_files(listing, out, shards, seed, skip_corrupt)
        return listing.classes, tasks, listing.ignored, sum(len(v) for v in listing.examples.values())
    if source == "tfds":
        if not options["tfds_name"]:
            raise UserError("--tfds-name is required with --source tfds")
        classes, tasks = planning.plan_tfds(options["tfds_name"], input_dir, out, shards, seed, skip_corrupt)
        return classes, tasks, [], sum(stop - start for t in tasks for start, stop in t.items)
    if source == "tfrecords":
        return None, planning.plan_existing(Path(input_dir), out), [], None
    raise UserError(f"unknown source {source!r}")


def _write_outputs(out: Path, manifest: dict, classes: list, workers: int, processed: int, seconds: float) -> None:
    """labels.txt, the manifest (the declared output) and this run's dllogger record."""
    write_text(out / layout.RECORDS_LABELS, "".join(f"{i}\t{c.id}\t{c.name}\n" for i, c in enumerate(classes)))
    write_json(out / layout.RECORDS_MANIFEST, manifest)
    with DLLogger(out / layout.PREPARE_LOG, stream=None) as log:
        log.log("PARAMETER", {**manifest["source"], "workers": workers})
        log.log((), {"examples": sum(manifest["splits"][s]["examples"] for s in SPLITS),
                     "processed_this_run": processed, "seconds": round(seconds, 3),
                     "images_per_second": processed / seconds, "converted": manifest["converted"],
                     "skipped": len(manifest["skipped"])})
    counts = ", ".join(f"{s}: {manifest['splits'][s]['examples']}" for s in SPLITS)
    print(f"prepare: wrote {out / layout.RECORDS_MANIFEST} ({counts}; {len(classes)} classes; "
          f"{manifest['converted']} converted, {len(manifest['skipped'])} skipped)")


def main(args: argparse.Namespace) -> int:
    prepare(args.source, args.input, args.output, val_labels=args.val_labels, synsets=args.synsets,
            tfds_name=args.tfds_name, train_shards=args.train_shards, val_shards=args.val_shards,
            workers=args.workers, seed=args.seed, skip_corrupt=args.skip_corrupt)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("prepare", help="write TFRecord shards (or validate existing ones) and a manifest",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, choices=["imagenet", "folders", "tfds", "tfrecords"],
                   help="imagenet: ILSVRC2012 raw train/<wnid>/ + flat val/ with labels; folders: "
                        "train/<class>/ + val/<class>/; tfds: a TFDS dataset already prepared in a local "
                        "data_dir (never downloaded; shuffled by --seed); "
                        "tfrecords: existing train-*/validation-* shards, validated and linked, not rewritten")
    p.add_argument("--input", required=True, help="source directory (data_dir for tfds)")
    p.add_argument("--output", required=True, help="directory for shards, manifest.json and labels.txt")
    p.add_argument("--val-labels", help="imagenet: LOC_val_solution.csv or one wnid per line in sorted image "
                                        "order (default: INPUT/LOC_val_solution.csv)")
    p.add_argument("--synsets", help="LOC_synset_mapping.txt-style 'wnid name' lines: the class index is the "
                                     "line's position, num_classes the line count (a train folder the file does "
                                     "not list is an error); without it, classes are the sorted train folders")
    p.add_argument("--tfds-name", help="tfds: dataset name (and config/version), e.g. imagenette/320px-v2")
    p.add_argument("--train-shards", type=int, default=1024, help="number of training shards (default 1024)")
    p.add_argument("--val-shards", type=int, default=128, help="number of validation shards (default 128)")
    p.add_argument("--workers", type=int, default=None,
                   help="parallel shard writers (default: the CPUs this process may use, no more than the "
                        "available memory holds at 256 MiB per worker, 1 GiB for tfds)")
    p.add_argument("--seed", type=int, default=0, help="seed of the deterministic shuffle (default 0)")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="record unreadable images in the manifest and go on, instead of failing")
    p.set_defaults(func=main)
