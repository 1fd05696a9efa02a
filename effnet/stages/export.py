"""``python -m effnet export``: a trained model as a servable SavedModel (and optionally ONNX).

The SavedModel runs the evaluation preprocessing (centre crop, resize) inside the graph and
returns the top-k class ids, class names and probabilities (softmax applied once):

- ``serving_default`` (= ``serve_bytes``): ``images``, a batch of encoded images (string;
  JPEG, PNG, GIF or BMP of any size; JPEGs decode exactly as in evaluation);
- ``serve_pixels``: ``images``, a batch of decoded uint8 RGB images [N, H, W, 3].

It loads with plain ``tf.saved_model.load`` (no effnet needed). ``export.json`` beside it (see
``effnet.formats.exported_model``) records the arch, image size, classes, label offset of the source records, the run,
weights and checkpoint it came from, and the versions. ``--onnx`` adds ``model.onnx``
(preprocessed float32 images [N, S, S, 3] in [0, 255] -> probabilities [N, classes]),
converted with tf2onnx and checked against the SavedModel with onnxruntime.
The export is written to a temporary directory and renamed: a partial one never looks complete.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from effnet.core import layout

DEFAULT_TOP_K = 5


def serving_module(model, image_size: int, class_names: list[str], top_k: int, crop_padding: int):
    """A tf.Module with ``serve_bytes``, ``serve_pixels`` and ``probabilities`` (preprocessed images in)."""
    import tensorflow as tf

    from effnet.data.tfdata import eval_crop, eval_image_any

    k = min(top_k, len(class_names))
    pixel_spec = tf.TensorSpec([image_size, image_size, 3], tf.float32)

    class Serving(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.class_names = tf.constant(class_names)

        @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="images")])
        def probabilities(self, images):
            return tf.nn.softmax(tf.cast(self.model(images, training=False), tf.float32))

        def _top_k(self, images):
            top = tf.math.top_k(self.probabilities(images), k)
            return {"class_ids": top.indices, "class_names": tf.gather(self.class_names, top.indices),
                    "probabilities": top.values}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
        def serve_bytes(self, images):
            return self._top_k(tf.map_fn(lambda e: eval_image_any(e, image_size, crop_padding), images,
                                         fn_output_signature=pixel_spec))

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
        def serve_pixels(self, images):
            return self._top_k(tf.map_fn(lambda i: eval_crop(i, image_size, crop_padding), images,
                                         fn_output_signature=pixel_spec))

    return Serving()


def save_serving(module, path: Path) -> None:
    """Save a ``serving_module`` as a SavedModel with its signatures (serving_default = serve_bytes)."""
    import tensorflow as tf

    tf.saved_model.save(module, str(path), signatures={
        "serving_default": module.serve_bytes, "serve_bytes": module.serve_bytes, "serve_pixels": module.serve_pixels})


def _versions() -> dict:
    import keras
    import tensorflow as tf

    import effnet

    return {"tensorflow": tf.__version__, "keras": keras.__version__, "effnet": effnet.__version__,
            "python": sys.version.split()[0]}


def export(run_dir: str, output: str, *, weights: str = "ema", checkpoint: str | None = None,
           top_k: int = DEFAULT_TOP_K, onnx: bool = False) -> Path:
    """Write the export of ``run_dir`` to ``output`` (replacing an earlier one whole); return its path."""
    from effnet.core.atomic import atomic_directory, write_json
    from effnet.formats import trained_run
    from effnet.formats.records import LABEL_OFFSET

    summary = trained_run.load_summary(run_dir)
    model = trained_run.load_model(run_dir, weights, checkpoint)
    size = summary["image_size"]
    module = serving_module(model, size, [c["name"] for c in summary["classes"]], top_k, summary["crop_padding"])
    output = Path(output)
    with atomic_directory(output) as tmp:
        save_serving(module, tmp / layout.SAVED_MODEL)
        if onnx:
            export_onnx(module, size, tmp / layout.ONNX, tmp / layout.SAVED_MODEL)
        write_json(tmp / layout.EXPORT_MANIFEST, {
            "arch": summary["arch"], "image_size": size, "num_classes": summary["num_classes"],
            "classes": summary["classes"], "label_offset": LABEL_OFFSET, "top_k": min(top_k, summary["num_classes"]),
            "crop_padding": summary["crop_padding"],
            "preprocessing": "centre crop image_size/(image_size+crop_padding) of the shorter side, bilinear "
                             "resize, RGB in [0, 255] (the model normalises)",
            "signatures": {"serving_default": "serve_bytes", "serve_bytes": "images: string [N]",
                           "serve_pixels": "images: uint8 [N, H, W, 3]"},
            "outputs": ["class_ids", "class_names", "probabilities"],
            "source": {"run": str(run_dir), "weights": weights, "checkpoint": str(checkpoint) if checkpoint else None,
                       "steps": summary["steps"]},
            "onnx": layout.ONNX if onnx else None, "versions": _versions(),
        })
    return output


def export_onnx(module, image_size: int, path: Path, saved_model: Path, tolerance: float = 1e-4) -> float:
    """Convert ``module.probabilities`` to ONNX at ``path`` and check it against the SavedModel; max |diff|."""
    import numpy as np
    import tensorflow as tf

    from effnet.core.errors import UserError

    try:
        import onnxruntime
        import tf2onnx
    except ImportError as exc:
        raise UserError(f"--onnx needs tf2onnx and onnxruntime ({exc}); install them with "
                        "`pip install -c requirements/constraints.txt tf2onnx onnxruntime`") from None
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    # Frozen first: tf2onnx would turn the captured constants (e.g. the normalisation's mean) into inputs.
    frozen = convert_variables_to_constants_v2(module.probabilities.get_concrete_function())
    tf2onnx.convert.from_graph_def(frozen.graph.as_graph_def(), input_names=[t.name for t in frozen.inputs],
                                   output_names=[t.name for t in frozen.outputs], opset=17, output_path=str(path))
    images = np.random.default_rng(0).uniform(0, 255, (2, image_size, image_size, 3)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ours = session.run(None, {session.get_inputs()[0].name: images})[0]
    loaded = tf.saved_model.load(str(saved_model))  # held: its variables live as long as it does
    theirs = loaded.probabilities(tf.constant(images)).numpy()
    diff = float(np.abs(ours - theirs).max())
    if diff > tolerance:
        raise UserError(f"{path}: the ONNX model's probabilities differ from the SavedModel's by {diff:.2g} "
                        f"(> {tolerance})")
    return diff


def main(args: argparse.Namespace) -> int:
    out = export(args.model, args.output, weights=args.weights, checkpoint=args.checkpoint, top_k=args.top_k,
                 onnx=args.onnx)
    print(f"export: {out} ({args.weights} weights{', with ONNX' if args.onnx else ''})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a trained model as a SavedModel (and ONNX)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the train stage's run directory")
    p.add_argument("--output", required=True, help="export directory (replaced whole)")
    p.add_argument("--weights", choices=("ema", "raw"), default="ema", help="which weights (default ema)")
    p.add_argument("--checkpoint", help="a ckpt-* directory of this run to export instead of the final weights")
    p.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help=f"classes returned (default {DEFAULT_TOP_K})")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx, checked with onnxruntime")
    p.set_defaults(func=main)
