"""Listing the sources the prepare stage reads: ImageNet raw layout, class folders, TFDS.

Each lister returns a SourcePlan: the class list (index order) and, per split,
the examples to write. Listing reads directory entries only; images are opened
by the shard writers.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from effnet.core.errors import UserError
from effnet.formats.images import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class ClassInfo:
    """One class: its id (wnid or folder name) and a human-readable name."""

    id: str
    name: str


@dataclass
class SourcePlan:
    """What to write: classes in label order, and per split a list of (image path, class index)."""

    classes: list[ClassInfo]
    examples: dict[str, list[tuple[str, int]]]
    ignored: list[str] = field(default_factory=list)


def _image_files(directory: Path, ignored: list[str]) -> list[Path]:
    files = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            files.append(path)
        else:
            ignored.append(str(path))
    return files


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise UserError(f"{path}: {what} directory not found")
    return path


def _class_dirs(root: Path) -> list[Path]:
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise UserError(f"{root}: no class directories")
    return dirs


def _folder_split(root: Path, class_index: dict[str, int], ignored: list[str]) -> list[tuple[str, int]]:
    examples = []
    for class_dir in _class_dirs(root):
        if class_dir.name not in class_index:
            raise UserError(f"{class_dir}: class {class_dir.name!r} is not among the classes")
        files = _image_files(class_dir, ignored)
        if not files:
            raise UserError(f"{class_dir}: empty class (no image files)")
        examples += [(str(f), class_index[class_dir.name]) for f in files]
    return examples


def read_synsets(path: str | Path) -> list[ClassInfo]:
    """The classes of a LOC_synset_mapping.txt-style file (``wnid name...`` per line), in file order."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the synsets file: {exc}") from None
    classes, seen = [], {}
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            wnid, _, name = line.strip().partition(" ")
            if not name:
                raise UserError(f"{path}:{number}: expected 'wnid name', got {line!r}")
            if wnid in seen:
                raise UserError(f"{path}:{number}: {wnid!r} is listed twice (first on line {seen[wnid]})")
            seen[wnid] = number
            classes.append(ClassInfo(wnid, name.strip()))
    if not classes:
        raise UserError(f"{path}: no classes in the synsets file")
    return classes


def _train_classes(root: str | Path, synsets: str | Path | None):
    """train/ and val/ of ``root``, the classes and their index by id.

    With a synsets file the classes are its lines, in its order (the standard ImageNet order
    for LOC_synset_mapping.txt, also when only some classes are present); without one, the
    sorted train folders.
    """
    root = Path(root)
    train = _require_dir(root / "train", "train")
    val = _require_dir(root / "val", "val")
    folders = _class_dirs(train)
    if synsets is None:
        classes = [ClassInfo(d.name, d.name) for d in folders]
    else:
        classes = read_synsets(synsets)
        listed = {c.id for c in classes}
        for d in folders:
            if d.name not in listed:
                raise UserError(f"{d}: class {d.name!r} is not listed in {synsets}")
    return train, val, classes, {c.id: i for i, c in enumerate(classes)}


def list_folders(root: str | Path, synsets: str | Path | None = None) -> SourcePlan:
    """``root/train/<class>/*`` and ``root/val/<class>/*``; classes: the synsets file, else the train folders."""
    train, val, classes, index = _train_classes(root, synsets)
    ignored: list[str] = []
    examples = {"train": _folder_split(train, index, ignored), "validation": _folder_split(val, index, ignored)}
    return SourcePlan(classes, examples, ignored)


def read_val_labels(path: Path, images: list[Path]) -> dict[str, str]:
    """Map validation image stem -> wnid, from LOC_val_solution.csv or a one-wnid-per-line file."""
    if not path.is_file():
        raise UserError(f"{path}: validation labels file not found (give --val-labels)")
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"ImageId", "PredictionString"} <= set(reader.fieldnames):
                raise UserError(f"{path}: expected columns ImageId,PredictionString, got {reader.fieldnames}")
            labels = {}
            for row in reader:
                prediction = (row["PredictionString"] or "").split()
                if not prediction:
                    raise UserError(f"{path}:{reader.line_num}: empty PredictionString for {row['ImageId']}")
                labels[row["ImageId"]] = prediction[0]
            return labels
    wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(wnids) != len(images):
        raise UserError(f"{path}: {len(wnids)} labels for {len(images)} validation images "
                        "(a one-wnid-per-line file lists one label per image in sorted name order)")
    return {image.stem: wnid for image, wnid in zip(images, wnids)}


def list_imagenet(root: str | Path, val_labels: str | Path | None = None,
                  synsets: str | Path | None = None) -> SourcePlan:
    """ILSVRC2012 raw layout: ``train/<wnid>/*.JPEG`` and a flat ``val/*.JPEG`` with a labels file.

    Class index = position in the synsets file, else in the sorted train wnids (the standard
    1000-class order when all classes are present).
    A ``val/`` that already holds ``<wnid>/`` folders is read like the folders source.
    """
    root = Path(root)
    train, val, classes, index = _train_classes(root, synsets)
    ignored: list[str] = []
    examples = {"train": _folder_split(train, index, ignored)}
    images = _image_files(val, ignored)
    if not images and any(p.is_dir() for p in val.iterdir()):
        examples["validation"] = _folder_split(val, index, ignored)
        return SourcePlan(classes, examples, ignored)
    labels = read_val_labels(Path(val_labels) if val_labels else root / "LOC_val_solution.csv", images)
    val_examples = []
    for image in images:
        wnid = labels.get(image.stem)
        if wnid is None:
            raise UserError(f"{image}: validation image has no label in {val_labels or 'LOC_val_solution.csv'}")
        if wnid not in index:
            raise UserError(f"{image}: label {wnid!r} is not among the classes")
        val_examples.append((str(image), index[wnid]))
    if not val_examples:
        raise UserError(f"{val}: no validation images")
    examples["validation"] = val_examples
    return SourcePlan(classes, examples, ignored)
