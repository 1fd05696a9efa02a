"""``python -m effnet infer``: top-k predictions of an exported model for image files.

Reads files and folders (recursively, every file), in batches, through the export's
``serve_bytes`` signature, so the preprocessing is exactly the evaluation's. Each file becomes
what prepare would store: RGB JPEGs as they are, any other image PIL reads (PNG, TIFF, WebP,
greyscale/CMYK, alpha over white) converted to an RGB JPEG, after a full decode. A file that is
not a readable image (or is truncated) gets a row with its error and the rest continue.
Writes one row per file to OUTPUT, CSV (path, error, class_id_1, class_name_1,
probability_1, ...) or JSON lines when OUTPUT ends in ``.jsonl``, atomically.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from effnet.core.errors import UserError
from effnet.formats import exported_model

DEFAULT_BATCH = 32


@dataclass
class Prediction:
    """One file's result: top-k ids, names and probabilities, or the error that stopped it."""

    path: str
    class_ids: list[int] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    error: str | None = None


def list_files(paths: list[str]) -> list[Path]:
    """The files named and those under the folders named (recursively, sorted, hidden ones left out)."""
    files = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file()
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
        elif path.exists():
            files.append(path)
        else:
            raise UserError(f"{path}: no such file or folder")
    if not files:
        raise UserError(f"no files to predict under {', '.join(paths)}")
    return files


def encoded_image(path: Path) -> bytes:
    """The JPEG that prepare would store for this file (RGB JPEGs as they are, anything else converted),
    after a full decode; ValueError if it is not a readable image."""
    from effnet.formats.images import CorruptImageError, check_image

    try:
        return check_image(path.read_bytes(), str(path)).jpeg
    except CorruptImageError as exc:
        raise ValueError(f"not a readable image: {exc.reason}") from None


class Predictor:
    """The export's ``serve_bytes`` signature over batches of files."""

    def __init__(self, export_dir: str | Path, top_k: int) -> None:
        import tensorflow as tf

        self.manifest = exported_model.load_manifest(export_dir)
        if not 1 <= top_k <= self.manifest["top_k"]:
            raise UserError(f"--top-k {top_k}: {export_dir} was exported with top-k {self.manifest['top_k']}")
        self.top_k = top_k
        self.tf = tf
        self.loaded = exported_model.load_saved_model(export_dir)
        self.serve = self.loaded.signatures["serve_bytes"]

    def _run(self, data: list[bytes]) -> dict:
        out = self.serve(images=self.tf.constant(data))
        return {k: v.numpy()[:, :self.top_k] for k, v in out.items()}

    def predict(self, paths: list[Path]) -> list[Prediction]:
        """Predictions for ``paths`` (one batch), errors per file."""
        rows, data, good = [Prediction(str(p)) for p in paths], [], []
        for row, path in zip(rows, paths):
            try:
                data.append(encoded_image(path))
                good.append(row)
            except (OSError, ValueError) as exc:
                row.error = str(exc)
        try:
            outs = [self._run(data)] if data else []
            groups = [good]
        except self.tf.errors.InvalidArgumentError:  # a file TF cannot decode: find it one by one
            outs, groups = [], []
            for row, one in zip(good, data):
                try:
                    outs.append(self._run([one]))
                    groups.append([row])
                except self.tf.errors.InvalidArgumentError as exc:
                    row.error = f"cannot decode: {exc.message.splitlines()[0]}"
        for out, group in zip(outs, groups):
            for i, row in enumerate(group):
                row.class_ids = [int(v) for v in out["class_ids"][i]]
                row.class_names = [v.decode() for v in out["class_names"][i]]
                row.probabilities = [float(v) for v in out["probabilities"][i]]
        return rows


def write_predictions(rows: list[Prediction], output: str | Path, top_k: int) -> None:
    """CSV, or JSON lines for a ``.jsonl`` name, written atomically."""
    from effnet.core.atomic import atomic_open

    with atomic_open(output, "w") as f:
        if str(output).endswith(".jsonl"):
            for row in rows:
                f.write(json.dumps(row.__dict__) + "\n")
            return
        writer = csv.writer(f)
        writer.writerow(["path", "error"] + [f"{c}_{k}" for k in range(1, top_k + 1)
                                             for c in ("class_id", "class_name", "probability")])
        for row in rows:
            cells = [v for k in range(len(row.class_ids)) for v in (
                row.class_ids[k], row.class_names[k], f"{row.probabilities[k]:.6g}")]
            writer.writerow([row.path, row.error or ""] + cells + [""] * (3 * top_k - len(cells)))


def infer(export_dir: str, images: list[str], output: str, top_k: int = 1,
          batch_size: int = DEFAULT_BATCH) -> list[Prediction]:
    """Predict every file of ``images`` and write ``output``; return the rows."""
    from tqdm import tqdm

    files = list_files(images)
    predictor = Predictor(export_dir, top_k)
    rows = []
    with tqdm(total=len(files), unit="img", desc="infer", disable=not sys.stderr.isatty()) as bar:
        for start in range(0, len(files), batch_size):
            rows += predictor.predict(files[start:start + batch_size])
            bar.update(min(batch_size, len(files) - start))
    write_predictions(rows, output, top_k)
    return rows


def main(args: argparse.Namespace) -> int:
    rows = infer(args.model, args.images, args.output, args.top_k, args.batch_size)
    failed = sum(r.error is not None for r in rows)
    print(f"infer: {args.output} ({len(rows)} files, {failed} not readable as images)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("infer", help="predict classes of image files with an exported model",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the export stage's directory")
    p.add_argument("--images", required=True, nargs="+", help="image files and folders (searched recursively)")
    p.add_argument("--output", required=True, help="predictions .csv (or .jsonl)")
    p.add_argument("--top-k", type=int, default=1, help="classes per image (default 1)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help=f"images per batch (default {DEFAULT_BATCH})")
    p.set_defaults(func=main)
