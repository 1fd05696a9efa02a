"""Planning the prepare stage: which examples go into which output shard.

Every source ends up as a list of ShardTask, one per output shard; the writers
(``effnet.stages.prepare.write``) run them. The examples of a split are shuffled across
the whole split by ``seed`` before they are cut into shards, so no shard holds one class.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from effnet.core.errors import UserError
from effnet.formats.records import FORMAT, SPLITS
from effnet.stages.prepare.sources import ClassInfo, SourcePlan

# tfds: a split is cut into this many contiguous blocks per output shard; the blocks are dealt to
# the shards in a seeded random order and each shard is shuffled in memory before it is written.
TFDS_BLOCKS_PER_SHARD = 8


@dataclass
class ShardTask:
    """One output shard: where it goes and what goes in."""

    path: str
    split: str
    kind: str                      # "files", "tfds" or "existing"
    items: list                    # files: [(path, class index)]; tfds: [[start, stop], ...]; existing: []
    classes: list[ClassInfo]
    skip_corrupt: bool = False
    tfds: dict = field(default_factory=dict)   # tfds: name, data_dir, split, image/label keys, seed

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


def shard_name(split: str, index: int, total: int) -> str:
    """Reference naming: ``train-00000-of-01024``."""
    return f"{split}-{index:05d}-of-{total:05d}"


def _split_evenly(items: list, shards: int, what: str) -> list[list]:
    if shards > len(items):
        raise UserError(f"{what}: {len(items)} examples cannot fill {shards} shards; use fewer shards")
    return [items[i * len(items) // shards:(i + 1) * len(items) // shards] for i in range(shards)]


def plan_files(plan: SourcePlan, out: Path, shards: dict[str, int], seed: int,
               skip_corrupt: bool) -> list[ShardTask]:
    """Shuffle each split deterministically by seed and cut it into shard tasks."""
    tasks = []
    for split in SPLITS:
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


def tfds_builder(name: str, data_dir: str):
    """The builder of a TFDS dataset already prepared in ``data_dir``; never downloads or builds."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as exc:
        raise UserError(f"tfds dataset {name!r} in {data_dir}: cannot load: {exc}") from exc
    if not builder.is_prepared():
        raise UserError(f"tfds dataset {name!r} is not prepared in {data_dir} (this stage never downloads): "
                        f"build it there first, e.g. `tfds build {name} --data_dir {data_dir}` on a machine with "
                        "the source files, then copy the data_dir")
    return builder


def _shuffled_blocks(total: int, shards: int, seed: int, what: str) -> list[list[list[int]]]:
    """Cut ``range(total)`` into contiguous blocks, deal them to ``shards`` in a seeded order."""
    _split_evenly(range(total), shards, what)  # enough examples for every shard
    blocks = min(total, shards * TFDS_BLOCKS_PER_SHARD)
    bounds = [total * b // blocks for b in range(blocks + 1)]
    order = list(range(blocks))
    random.Random(f"{seed}-{what}").shuffle(order)
    return [sorted([bounds[b], bounds[b + 1]] for b in chunk) for chunk in _split_evenly(order, shards, what)]


def plan_tfds(name: str, data_dir: str, out: Path, shards: dict[str, int], seed: int,
              skip_corrupt: bool) -> tuple[list[ClassInfo], list[ShardTask]]:
    """Shard tasks over a locally prepared TFDS dataset, shuffled across each split by ``seed``.

    TFDS splits are often class-sorted and only sequentially readable: each shard reads
    TFDS_BLOCKS_PER_SHARD contiguous blocks drawn at random from the whole split and
    shuffles them in memory.
    """
    info = tfds_builder(name, data_dir).info
    image_key, label_key = _image_and_label_keys(name, info)
    classes = [ClassInfo(n, n) for n in info.features[label_key].names]
    split_names = {"train": "train", "validation": "validation" if "validation" in info.splits else "test"}
    tasks = []
    for split, tfds_split in split_names.items():
        if tfds_split not in info.splits:
            raise UserError(f"tfds dataset {name!r}: no {tfds_split!r} split (has {sorted(info.splits)})")
        total = info.splits[tfds_split].num_examples
        for i, blocks in enumerate(_shuffled_blocks(total, shards[split], seed, f"{name} {tfds_split}")):
            tasks.append(ShardTask(
                str(out / shard_name(split, i, shards[split])), split, "tfds", blocks, classes, skip_corrupt,
                {"name": name, "data_dir": data_dir, "split": tfds_split, "image_key": image_key,
                 "label_key": label_key, "seed": seed}))
    return classes, tasks


def plan_existing(src: Path, out: Path) -> list[ShardTask]:
    """Validate-in-place tasks for existing ``train-*`` / ``validation-*`` shards, linked into ``out``."""
    tasks = []
    for split in SPLITS:
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


def classes_from_labels(entries: list[dict]) -> tuple[list[ClassInfo], int]:
    """Classes and label base of existing shards, from the labels their validation found."""
    labels: dict[int, str] = {}
    for entry in entries:
        for label, text in entry.pop("labels").items():
            labels.setdefault(int(label), text)
    offset = 0 if 0 in labels else 1
    count = max(labels) + 1 - offset
    return [ClassInfo(str(i), labels.get(i + offset, "") or str(i)) for i in range(count)], offset
