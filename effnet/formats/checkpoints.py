"""Training checkpoints: every variable of the run, written atomically, newest valid one resumed.

``DIR/ckpt-000012345/`` holds ``state.npz`` (model weights and RNG states, optimizer slots and
loss scale, EMA weights, by variable path) and ``meta.json`` (global step, epoch, position in the
epoch, data seed, arch, classes, image size, the recipe's fingerprint, the sha256 of ``state.npz``). A
checkpoint is written to a temporary directory and renamed when complete, so a kill never leaves a
half-written one under a checkpoint name; a damaged one fails its checksum and the previous one is used.
Checkpoints of the same model under another recipe (a changed training key or other records: their steps
would not continue this run's) are moved aside into ``DIR/superseded-<recipe>/`` and the run starts afresh.
"""
from __future__ import annotations

import json
import os
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np

from effnet.core import layout
from effnet.core.atomic import atomic_directory
from effnet.core.digests import file_sha256
from effnet.core.errors import UserError

# What must match for a checkpoint to be resumed by this run.
IDENTITY = ("arch", "num_classes", "image_size")
RECIPE = "recipe_sha256"


def save(directory: str | Path, arrays: dict[str, np.ndarray], meta: dict, keep: int) -> Path:
    """Write checkpoint ``meta["step"]`` atomically; keep the newest ``keep``; return its directory."""
    directory = Path(directory)
    final = directory / layout.checkpoint_name(meta["step"])
    needed = sum(a.nbytes for a in arrays.values())
    with atomic_directory(final, needed) as tmp:  # replaces the same step saved again (a signal right after a save)
        _write_npz(tmp / layout.CHECKPOINT_STATE, arrays)
        meta = {**meta, "sha256": file_sha256(tmp / layout.CHECKPOINT_STATE), "variables": len(arrays)}
        (tmp / layout.CHECKPOINT_META).write_text(json.dumps(meta, indent=2) + "\n")
    for old in checkpoints(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez``'s format (what ``np.load`` reads), synced; a failed write leaves no zip file open behind it
    (numpy's would complain of a closed file when collected)."""
    with open(path, "wb") as f:
        with zipfile.ZipFile(f, mode="w", allowZip64=True) as archive:
            for name, array in arrays.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def checkpoints(directory: str | Path) -> list[Path]:
    """The checkpoint directories, oldest first (temporary ones never count)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_dir() and layout.is_checkpoint(p))


def read(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The meta and arrays of one checkpoint; UserError if it is incomplete or damaged."""
    try:
        meta = json.loads((path / layout.CHECKPOINT_META).read_text())
        if file_sha256(path / layout.CHECKPOINT_STATE) != meta["sha256"]:
            raise UserError(f"{path / layout.CHECKPOINT_STATE}: checksum mismatch (damaged)")
        with np.load(path / layout.CHECKPOINT_STATE) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{path}: unreadable checkpoint: {exc}") from None
    return meta, arrays


def latest(directory: str | Path, identity: dict, recipe: str | None = None
           ) -> tuple[dict, dict[str, np.ndarray]] | None:
    """The newest valid checkpoint of ``directory`` (damaged ones reported and passed over), or None.

    A checkpoint of another model (``IDENTITY`` keys differ from ``identity``) is refused; with
    ``recipe``, one of another recipe sets every checkpoint aside (``supersede``) and gives None.
    """
    for path in reversed(checkpoints(directory)):
        try:
            meta, arrays = read(path)
        except UserError as exc:
            warnings.warn(f"{exc}; resuming from the previous checkpoint", stacklevel=2)
            continue
        check_model(path, meta, identity, "this run")
        if recipe is not None and meta.get(RECIPE) != recipe:
            moved = supersede(directory, meta.get(RECIPE) or "unknown")
            warnings.warn(f"{path}: a checkpoint of this model under another training recipe (a changed train or "
                          f"model key, or other records); its checkpoints were moved to {moved} and training starts "
                          "afresh", stacklevel=2)
            return None
        return meta, arrays
    return None


def check_model(path: Path, meta: dict, identity: dict, whose: str) -> None:
    """UserError naming each ``IDENTITY`` key where checkpoint ``path`` differs from ``identity`` (``whose``)."""
    differs = [f"{k} {meta.get(k)!r} in the checkpoint, {identity[k]!r} in {whose}"
               for k in IDENTITY if meta.get(k) != identity[k]]
    if differs:
        raise UserError(f"{path}: a checkpoint of another model ({', '.join(differs)}); use another checkpoint "
                        "directory or remove it")


def supersede(directory: str | Path, recipe: str) -> Path:
    """Move every checkpoint of ``directory`` into a new ``superseded-<recipe>[-N]/`` beside them; return it."""
    directory = Path(directory)
    target, n = directory / f"{layout.SUPERSEDED_PREFIX}{recipe[:12]}", 1
    while target.exists():
        n += 1
        target = directory / f"{layout.SUPERSEDED_PREFIX}{recipe[:12]}-{n}"
    target.mkdir()
    for path in checkpoints(directory):
        os.replace(path, target / path.name)
    return target
