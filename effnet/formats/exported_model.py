"""What the export stage leaves in its folder, read by infer and the inference benchmark (file names:
``effnet.core.layout``).

``saved_model/`` is a SavedModel with the ``serving_default`` (= ``serve_bytes``) and ``serve_pixels``
signatures; ``export.json`` describes it (arch, image size, classes, top_k, source run, versions);
``model.onnx`` is there when exported with ``--onnx``.
"""
from __future__ import annotations

from pathlib import Path

from effnet.core import jsonfile, layout
from effnet.core.errors import UserError


def load_manifest(export_dir: str | Path) -> dict:
    """The export's manifest; UserError naming the directory when it is not an export."""
    return jsonfile.read(Path(export_dir) / layout.EXPORT_MANIFEST,
                         "missing: not an export (run `python -m effnet export`)")


def load_saved_model(export_dir: str | Path):
    """The export's SavedModel, loaded (it owns the variables the signatures use); UserError naming the
    folder when it is incomplete or damaged: a missing or truncated variables file, no saved_model.pb."""
    import tensorflow as tf

    path = Path(export_dir) / layout.SAVED_MODEL
    try:
        return tf.saved_model.load(str(path))
    except (OSError, ValueError, LookupError, tf.errors.OpError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{path}: incomplete or damaged SavedModel ({reason}); run the export stage again") from None
