"""What the export stage leaves in its folder, read by infer and the inference benchmark (file names:
``effnet.core.layout``).

``saved_model/`` is a SavedModel with the ``serving_default`` (= ``serve_bytes``) and ``serve_pixels``
signatures; ``export.json`` describes it (arch, image size, classes, top_k, source run, versions);
``model.onnx`` is there when exported with ``--onnx``.
"""
from __future__ import annotations

from pathlib import Path

from effnet.core import jsonfile, layout


def load_manifest(export_dir: str | Path) -> dict:
    """The export's manifest; UserError naming the directory when it is not an export."""
    return jsonfile.read(Path(export_dir) / layout.EXPORT_MANIFEST,
                         "missing: not an export (run `python -m effnet export`)")
