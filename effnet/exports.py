"""The layout of an export directory, shared by the export stage (writer) and infer (reader).

``EXPORT/saved_model/`` is a SavedModel with the ``serving_default`` (= ``serve_bytes``) and
``serve_pixels`` signatures; ``EXPORT/export.json`` describes it (arch, image size, classes,
top_k, source run, versions); ``EXPORT/model.onnx`` is there when exported with ``--onnx``.
"""
from __future__ import annotations

import json
from pathlib import Path

from effnet.errors import UserError

MANIFEST = "export.json"
SAVED_MODEL = "saved_model"
ONNX = "model.onnx"


def load_manifest(export_dir: str | Path) -> dict:
    """The export's manifest; UserError naming the directory when it is not an export."""
    path = Path(export_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{export_dir}: not an export ({MANIFEST}: {exc}); run `python -m effnet export`") from None
