"""``python -m effnet prepare``: write (or validate) TFRecord shards and their manifest.

Output, in the reference ImageNet layout::

    DIR/train-00000-of-01024 ...  DIR/validation-00000-of-00128 ...
    DIR/manifest.json   per-shard counts, bytes, sha256; classes; source and options
    DIR/labels.txt      one line per class index: ``index<TAB>id<TAB>name``
    DIR/prepare.dllog.json  options and throughput of each run, in dllogger's JSON-lines format

Each record is a tf.train.Example with ``image/encoded`` (JPEG), ``image/format``,
``image/class/label`` (int64, 1-based like Google's ImageNet converter: class index + 1;
readers subtract the manifest's ``label_offset``), ``image/class/text``,
``image/class/synset``, ``image/height``, ``image/width``, ``image/filename``,
``image/colorspace``, ``image/channels``.

Shards are written by parallel workers to temporary files and renamed when complete;
a per-shard receipt in ``DIR/.receipts/`` records what went in, so a rerun after a kill
writes only the shards that are missing or whose inputs changed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from effnet.atomic import atomic_open, write_json, write_text
from effnet.data import sources
from effnet.data.images import CorruptImageError, check_image
from effnet.data.sources import ClassInfo
from effnet.data.tfrecord import encode_record, iter_records
from effnet.dllog import DLLogger
from effnet.errors import UserError

MANIFEST = "manifest.json"
LABELS = "labels.txt"
LOG = "prepare.dllog.json"  # dllogger JSON lines, one run appended after another
RECEIPTS = ".receipts"
FORMAT = "effnet-tfrecords/1"
LABEL_OFFSET = 1


@dataclass
class ShardTask:
    """One output shard: where it goes and what goes in."""

    path: str
    split: str
    kind: str                      # "files", "tfds" or "existing"
    items: list                    # files: [(path, class index)]; tfds: [start, end]; existing: []
    classes: list[ClassInfo]
    skip_corrupt: bool = False
    tfds: dict = field(default_factory=dict)

    def fingerprint(self) -> str:
        """Identifies the shard's inputs: changes when a source file, option or class changes."""
        state = [FORMAT, self.kind, self.split, self.items, [asdict(c) for c in self.classes],
                 self.skip_corrupt, self.tfds]
        if self.kind == "files":
            state.append([_size_and_mtime(p) for p, _ in self.items])
        elif self.kind == "existing":
            state.append(_size_and_mtime(self.path))
        return hashlib.sha256(json.dumps(state, default=str).encode()).hexdigest()


def _size_and_mtime(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


# ---- worker side -----------------------------------------------------------------------

_progress = None


def _init_worker(counter) -> None:
    global _progress
    _progress = counter
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _tick(n: int = 1) -> None:
    if _progress is not None:
        with _progress.get_lock():
            _progress.value += n


def _example(jpeg: bytes, height: int, width: int, label: int, cls: ClassInfo, filename: str) -> bytes:
    from tensorflow.core.example import example_pb2, feature_pb2

    def b(v): return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[v]))
    def i(v): return feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[v]))

    return example_pb2.Example(features=feature_pb2.Features(feature={
        "image/encoded": b(jpeg), "image/format": b(b"JPEG"), "image/colorspace": b(b"RGB"),
        "image/channels": i(3), "image/height": i(height), "image/width": i(width),
        "image/class/label": i(label + LABEL_OFFSET), "image/class/text": b(cls.name.encode()),
        "image/class/synset": b(cls.id.encode()), "image/filename": b(filename.encode()),
    })).SerializeToString()


def _source_images(task: ShardTask):
    """Yield (encoded bytes, class index, filename, name for errors) for a shard's inputs."""
    if task.kind == "files":
        for path, label in task.items:
            with open(path, "rb") as f:
                yield f.read(), label, os.path.basename(path), path
        return
    import tensorflow_datasets as tfds

    start, end = task.items
    builder = tfds.builder(task.tfds["name"], data_dir=task.tfds["data_dir"])
    image_key, label_key = task.tfds["image_key"], task.tfds["label_key"]
    ds = builder.as_dataset(split=f"{task.tfds['split']}[{start}:{end}]", shuffle_files=False,
                            decoders={image_key: tfds.decode.SkipDecoding()})
    for n, ex in enumerate(tfds.as_numpy(ds), start):
        name = ex.get("file_name", b"").decode() or f"{task.tfds['split']}-{n:08d}"
        yield ex[image_key], int(ex[label_key]), name, f"tfds {task.tfds['name']} {task.tfds['split']}[{n}] ({name})"


def write_shard(task: ShardTask) -> dict:
    """Write one shard atomically; return its manifest entry."""
    digest, count, skipped, converted = hashlib.sha256(), 0, [], 0
    with atomic_open(task.path) as out:
        for data, label, filename, name in _source_images(task):
            try:
                image = check_image(data, name)
            except CorruptImageError as exc:
                if not task.skip_corrupt:
                    raise
                skipped.append({"file": name, "error": exc.reason})
                _tick()
                continue
            record = encode_record(_example(image.jpeg, image.height, image.width, label,
                                            task.classes[label], filename))
            out.write(record)
            digest.update(record)
            count += 1
            converted += image.converted
            _tick()
    return {"file": os.path.basename(task.path), "examples": count, "bytes": os.path.getsize(task.path),
            "sha256": digest.hexdigest(), "converted": converted, "skipped": skipped}


def check_example(data: bytes, where: str):
    """Parse a record as an Example with a label and a decodable image; UserError naming ``where`` otherwise."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.example import example_pb2

    try:
        feature = example_pb2.Example.FromString(data).features.feature
    except DecodeError as exc:
        raise UserError(f"{where}: not a tf.train.Example: {exc}") from None
    for key in ("image/encoded", "image/class/label"):
        if key not in feature:
            raise UserError(f"{where}: missing key {key!r}")
    check_image(feature["image/encoded"].bytes_list.value[0], where)
    return feature


def validate_shard(task: ShardTask) -> dict:
    """Check an existing shard record by record (CRCs, Example keys, image decodes); return its entry."""
    digest, count, labels = hashlib.sha256(), 0, {}
    with open(task.path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    for n, (offset, data) in enumerate(iter_records(task.path)):
        feature = check_example(data, f"{task.path} (record {n} at byte offset {offset})")
        label = feature["image/class/label"].int64_list.value[0]
        text = feature["image/class/text"].bytes_list.value[0].decode() if "image/class/text" in feature else ""
        labels.setdefault(label, text)
        count += 1
        _tick()
    return {"file": os.path.basename(task.path), "examples": count, "bytes": os.path.getsize(task.path),
            "sha256": digest.hexdigest(), "converted": 0, "skipped": [], "labels": labels}


def _run_task(task: ShardTask) -> dict:
    return validate_shard(task) if task.kind == "existing" else write_shard(task)


# ---- planning ------------------------------------------------------------------------------


def shard_name(split: str, index: int, total: int) -> str:
    """Reference naming: ``train-00000-of-01024``."""
    return f"{split}-{index:05d}-of-{total:05d}"


def _split_evenly(items: list, shards: int, what: str) -> list[list]:
    if shards > len(items):
        raise UserError(f"{what}: {len(items)} examples cannot fill {shards} shards; use fewer shards")
    return [items[i * len(items) // shards:(i + 1) * len(items) // shards] for i in range(shards)]


def plan_files(plan: sources.SourcePlan, out: Path, shards: dict[str, int], seed: int,
               skip_corrupt: bool) -> list[ShardTask]:
    """Shuffle each split deterministically by seed and cut it into shard tasks."""
    tasks = []
    for split in sources.SPLITS:
        items = sorted(plan.examples[split])
        random.Random(f"{seed}-{split}").shuffle(items)
        for i, chunk in enumerate(_split_evenly(items, shards[split], f"{split} split")):
            tasks.append(ShardTask(str(out / shard_name(split, i, shards[split])), split, "files",
                                   chunk, plan.classes, skip_corrupt))
    return tasks


def _image_and_label_keys(name: str, info) -> tuple[str, str]:
    """The dataset's supervised keys, or else its one Image and one ClassLabel feature."""
    import tensorflow_datasets as tfds

    if info.supervised_keys:
        return info.supervised_keys[0], info.supervised_keys[1]
    images = [k for k, f in info.features.items() if isinstance(f, tfds.features.Image)]
    labels = [k for k, f in info.features.items() if isinstance(f, tfds.features.ClassLabel)]
    if len(images) != 1 or len(labels) != 1:
        raise UserError(f"tfds dataset {name!r}: no supervised keys and not exactly one Image and one "
                        f"ClassLabel feature (features: {sorted(info.features)})")
    return images[0], labels[0]


def plan_tfds(name: str, data_dir: str, out: Path, shards: dict[str, int],
              skip_corrupt: bool) -> tuple[list[ClassInfo], list[ShardTask]]:
    """Shard tasks over contiguous slices of a locally available TFDS dataset (kept in TFDS order)."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
        if not builder.is_prepared():
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
                manual_dir=os.path.join(data_dir, "downloads", "manual")))
    except Exception as exc:
        raise UserError(f"tfds dataset {name!r} in {data_dir}: cannot load: {exc}") from exc
    info = builder.info
    image_key, label_key = _image_and_label_keys(name, info)
    classes = [ClassInfo(n, n) for n in info.features[label_key].names]
    split_names = {"train": "train", "validation": "validation" if "validation" in info.splits else "test"}
    tasks = []
    for split, tfds_split in split_names.items():
        if tfds_split not in info.splits:
            raise UserError(f"tfds dataset {name!r}: no {tfds_split!r} split (has {sorted(info.splits)})")
        total = info.splits[tfds_split].num_examples
        ranges = _split_evenly(list(range(total)), shards[split], f"{name} {tfds_split}")
        for i, r in enumerate(ranges):
            tasks.append(ShardTask(
                str(out / shard_name(split, i, shards[split])), split, "tfds", [r[0], r[-1] + 1], classes,
                skip_corrupt, {"name": name, "data_dir": data_dir, "split": tfds_split,
                               "image_key": image_key, "label_key": label_key}))
    return classes, tasks


def plan_existing(src: Path, out: Path) -> list[ShardTask]:
    """Validate-in-place tasks for existing ``train-*`` / ``validation-*`` shards, linked into ``out``."""
    tasks = []
    for split in sources.SPLITS:
        shards = sorted(p for p in src.glob(f"{split}-*") if p.is_file() and p.suffix != ".idx")
        if not shards:
            raise UserError(f"{src}: no {split}-* TFRecord shards")
        for shard in shards:
            target = out / shard.name
            if target.resolve() != shard.resolve():
                target.unlink(missing_ok=True)
                target.symlink_to(shard.resolve())
            tasks.append(ShardTask(str(target), split, "existing", [], []))
    return tasks


def _classes_from_labels(entries: list[dict]) -> tuple[list[ClassInfo], int]:
    labels: dict[int, str] = {}
    for entry in entries:
        for label, text in entry.pop("labels").items():
            labels.setdefault(int(label), text)
    offset = 0 if 0 in labels else 1
    count = max(labels) + 1 - offset
    return [ClassInfo(str(i), labels.get(i + offset, "") or str(i)) for i in range(count)], offset


# ---- running ---------------------------------------------------------------------------------


def _receipt_path(task: ShardTask) -> Path:
    path = Path(task.path)
    return path.parent / RECEIPTS / f"{path.name}.json"


def _done(task: ShardTask, fingerprint: str) -> dict | None:
    """The receipt of a shard already written from the same inputs, if the shard is intact on disk."""
    try:
        receipt = json.loads(_receipt_path(task).read_text())
        if receipt["fingerprint"] == fingerprint and os.path.getsize(task.path) == receipt["entry"]["bytes"]:
            return receipt["entry"]
    except (OSError, ValueError, KeyError):
        pass
    return None


def run_tasks(tasks: list[ShardTask], workers: int, total_examples: int | None) -> tuple[list[dict], int]:
    """Run the shard tasks not already done, in parallel, with a progress bar.

    Returns the manifest entries in task order and the number of images processed by this run.
    """
    fingerprints = [t.fingerprint() for t in tasks]
    entries = [_done(t, f) for t, f in zip(tasks, fingerprints)]
    todo = [i for i, e in enumerate(entries) if e is None]
    print(f"prepare: {len(tasks) - len(todo)} of {len(tasks)} shards already complete, {len(todo)} to write",
          flush=True)
    if not todo:
        return entries, 0
    already = sum(e["examples"] + len(e["skipped"]) for e in entries if e)
    ctx = mp.get_context("spawn")
    counter = ctx.Value("q", 0)
    bar = tqdm(total=total_examples and total_examples - already, unit="img", desc="prepare",
               dynamic_ncols=True, mininterval=1.0)
    pool = ctx.Pool(min(workers, len(todo)), initializer=_init_worker, initargs=(counter,))
    try:
        pending = {i: pool.apply_async(_run_task, (tasks[i],)) for i in todo}
        while pending:
            time.sleep(0.2)
            bar.update(counter.value - bar.n)
            for i in [i for i, r in pending.items() if r.ready()]:
                entries[i] = pending.pop(i).get()  # re-raises a worker's error
                write_json(_receipt_path(tasks[i]), {"fingerprint": fingerprints[i], "entry": entries[i]})
        bar.update(counter.value - bar.n)
        pool.close()
    except BaseException:
        pool.terminate()  # stops the other shards mid-write: remove their temporary files
        for directory in {Path(t.path).parent for t in tasks}:
            remove_temporaries(directory)
        raise
    finally:
        pool.join()
        bar.close()
    return entries, counter.value


def remove_temporaries(directory: Path) -> None:
    """Delete the temporary files of shards whose writing was interrupted (never trusted, never kept)."""
    for stale in directory.glob(".*.tmp-*"):
        stale.unlink(missing_ok=True)


def prepare(source: str, input_dir: str, output_dir: str, *, val_labels: str | None = None,
            synsets: str | None = None, tfds_name: str | None = None, train_shards: int = 1024,
            val_shards: int = 128, workers: int | None = None, seed: int = 0,
            skip_corrupt: bool = False) -> dict:
    """Write or validate the shards of ``source`` into ``output_dir``; return the manifest."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_temporaries(out)  # left by a run that was killed
    workers = workers or os.cpu_count() or 1
    shards = {"train": train_shards, "validation": val_shards}
    options = {"seed": seed, "train_shards": train_shards, "val_shards": val_shards, "skip_corrupt": skip_corrupt,
               "val_labels": val_labels, "synsets": synsets, "tfds_name": tfds_name}
    ignored: list[str] = []
    total = None
    label_offset = LABEL_OFFSET
    if source in ("imagenet", "folders"):
        plan = (sources.list_imagenet(input_dir, val_labels, synsets) if source == "imagenet"
                else sources.list_folders(input_dir, synsets))
        classes, ignored = plan.classes, plan.ignored
        tasks = plan_files(plan, out, shards, seed, skip_corrupt)
        total = sum(len(v) for v in plan.examples.values())
    elif source == "tfds":
        if not tfds_name:
            raise UserError("--tfds-name is required with --source tfds")
        classes, tasks = plan_tfds(tfds_name, input_dir, out, shards, skip_corrupt)
        total = sum(t.items[1] - t.items[0] for t in tasks)
    elif source == "tfrecords":
        tasks = plan_existing(Path(input_dir), out)
    else:
        raise UserError(f"unknown source {source!r}")

    start = time.perf_counter()
    entries, processed = run_tasks(tasks, workers, total)
    seconds = time.perf_counter() - start
    if source == "tfrecords":
        classes, label_offset = _classes_from_labels(entries)

    manifest = {
        "format": FORMAT,
        "source": {"kind": source, "input": str(Path(input_dir).resolve()), **options},
        "label_offset": label_offset,
        "num_classes": len(classes),
        "classes": [asdict(c) for c in classes],
        "splits": {
            split: {"examples": sum(e["examples"] for e, t in zip(entries, tasks) if t.split == split),
                    "shards": [e for e, t in zip(entries, tasks) if t.split == split]}
            for split in sources.SPLITS
        },
        "converted": sum(e["converted"] for e in entries),
        "skipped": [s for e in entries for s in e["skipped"]],
        "ignored_files": ignored,
    }
    write_text(out / LABELS, "".join(f"{i}\t{c.id}\t{c.name}\n" for i, c in enumerate(classes)))
    write_json(out / MANIFEST, manifest)
    with DLLogger(out / LOG, stream=None) as log:
        log.log("PARAMETER", {**manifest["source"], "workers": workers})
        log.log((), {"examples": sum(manifest["splits"][s]["examples"] for s in sources.SPLITS),
                     "processed_this_run": processed, "seconds": round(seconds, 3),
                     "images_per_second": processed / seconds, "converted": manifest["converted"],
                     "skipped": len(manifest["skipped"])})
    counts = ", ".join(f"{s}: {manifest['splits'][s]['examples']}" for s in sources.SPLITS)
    print(f"prepare: wrote {out / MANIFEST} ({counts}; {len(classes)} classes; "
          f"{manifest['converted']} converted, {len(manifest['skipped'])} skipped)")
    return manifest


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
                        "train/<class>/ + val/<class>/; tfds: a TFDS dataset in a local data_dir; "
                        "tfrecords: existing train-*/validation-* shards, validated and linked, not rewritten")
    p.add_argument("--input", required=True, help="source directory (data_dir for tfds)")
    p.add_argument("--output", required=True, help="directory for shards, manifest.json and labels.txt")
    p.add_argument("--val-labels", help="imagenet: LOC_val_solution.csv or one wnid per line in sorted image "
                                        "order (default: INPUT/LOC_val_solution.csv)")
    p.add_argument("--synsets", help="LOC_synset_mapping.txt-style 'wnid name' lines for human-readable names")
    p.add_argument("--tfds-name", help="tfds: dataset name (and config/version), e.g. imagenette/320px-v2")
    p.add_argument("--train-shards", type=int, default=1024, help="number of training shards (default 1024)")
    p.add_argument("--val-shards", type=int, default=128, help="number of validation shards (default 128)")
    p.add_argument("--workers", type=int, default=None, help="parallel shard writers (default: all cores)")
    p.add_argument("--seed", type=int, default=0, help="seed of the deterministic shuffle (default 0)")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="record unreadable images in the manifest and go on, instead of failing")
    p.set_defaults(func=main)
