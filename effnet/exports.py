"""The layout of an export directory, shared by the export stage (writer) and infer (reader).

``EXPORT/saved_model/`` is a SavedModel with the ``serving_default`` (= ``serve_bytes``) and
``serve_pixels`` signatures; ``EXPORT/export.json`` describes it (arch, image size, classes,
top_k, source run, versions); ``EXPORT/model.onnx`` is there when exported with ``--onnx``.
"""
from __future__ import annotations

from pathlib import Path

from effnet import jsonfile

MANIFEST = "export.json"
SAVED_MODEL = "saved_model"
ONNX = "model.onnx"


def load_manifest(export_dir: str | Path) -> dict:
    """The export's manifest; UserError naming the directory when it is not an export."""
    return jsonfile.read(Path(export_dir) / MANIFEST, "missing: not an export (run `python -m effnet export`)")
