"""What the train stage leaves in its folder, read by evaluate, export, the benchmarks, the report and
``train.init_from`` (file names: ``effnet.core.layout``).

``model.keras`` and ``ema.keras`` are the final raw and EMA-averaged models in Keras' native format
(``keras.models.load_model`` rebuilds them, custom layers included); ``config.yaml`` is the effective
configuration; ``train_summary.json`` is written last, so its presence means the run finished. Checkpoints live
in ``checkpoints/`` unless moved.
"""
from __future__ import annotations

from pathlib import Path

from effnet.core import jsonfile, layout
from effnet.core.errors import UserError
from effnet.formats import checkpoints


def load_summary(run_dir: str | Path) -> dict:
    """The summary of a finished run (arch, num_classes, image_size, classes, ...); UserError otherwise."""
    if not Path(run_dir).is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    return jsonfile.read(Path(run_dir) / layout.TRAIN_SUMMARY, "missing: no finished training run in this directory")


def load_model(run_dir: str | Path, weights: str = "ema", checkpoint: str | Path | None = None):
    """The model of a finished run with its ``weights`` ("ema", the default, or "raw").

    With ``checkpoint`` (a ``ckpt-*`` directory of any run of the same model), its weights of
    that kind replace the final ones; a checkpoint of another arch, class count or image size is
    refused, naming both sides.
    """
    import keras

    from effnet.models import layers  # noqa: F401  (registers the custom layers for loading)

    if weights not in layout.WEIGHTS:
        raise UserError(f"weights {weights!r}: choose one of {', '.join(layout.WEIGHTS)}")
    summary = load_summary(run_dir)
    path = Path(run_dir) / layout.WEIGHTS[weights]
    if checkpoint is not None:
        path = Path(run_dir) / layout.RAW_MODEL
    elif not path.exists():
        raise UserError(f"{path}: {weights} model missing (a run without EMA has only {layout.RAW_MODEL})")
    model = keras.models.load_model(path, compile=False)
    if checkpoint is not None:
        _load_checkpoint(model, Path(checkpoint), weights, summary, run_dir)
    return model


def _load_checkpoint(model, path: Path, weights: str, summary: dict, run_dir) -> None:
    meta, arrays = checkpoints.read(path)
    checkpoints.check_model(path, meta, summary, str(run_dir))
    if weights == "ema" and not any(name.startswith("ema/") for name in arrays):
        raise UserError(f"{path}: holds no EMA weights (trained without EMA); use --weights raw")
    prefixes = ("ema/", "model/") if weights == "ema" else ("model/",)  # EMA covers weights and BN statistics
    for v in model.variables:
        name = next((p + v.path for p in prefixes if p + v.path in arrays), None)
        if name is None:
            raise UserError(f"{path}: no value for {v.path}: not a checkpoint of this run's model")
        v.assign(arrays[name])

