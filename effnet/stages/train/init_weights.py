"""A training run's starting weights (``train.init_from``): keras.applications EfficientNet files or one of our runs.

Accepted sources:
- the weights keras.applications' EfficientNetB0-B7 and EfficientNetV2B0-B3/S/M/L load or save: the downloaded
  legacy ``.h5`` files (``efficientnetb0.h5``, ``efficientnetb0_notop.h5``, ``efficientnetv2-s.h5``, ...) and
  Keras 3 ``.weights.h5``;
- one of our runs: its directory (its EMA model, or the raw one if it trained without EMA) or one of its
  checkpoints (``RUN/checkpoints/ckpt-*``, its EMA weights when it has them).

Our EfficientNets are keras.applications' layer for layer (V1's "same" padding equals their explicit padding
plus "valid"), so variables are matched by structure: the file's layer of the same block and role. Every layer
of the model is accounted for: loaded, or, for the classifier when the class count differs, the file has no top
or one of our runs trained other classes (by name), re-initialised and named. Any other shape that differs
(another arch) stops with the layer's name.
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from effnet.core import layout
from effnet.core.digests import file_sha256
from effnet.core.errors import UserError
from effnet.formats import trained_run
from effnet.models import efficientnet, efficientnet_v2, native_size
from effnet.models.blocks import IMAGENET_MEAN, IMAGENET_STD, round_repeats

HEAD = "logits"
# our layer names -> keras.applications' outside the blocks
KERAS_NAMES = {"head_conv": "top_conv", "head_bn": "top_bn", HEAD: "predictions"}


@dataclass(frozen=True)
class InitReport:
    """What ``load`` did: the source's kind, how many layers it loaded and which it left re-initialised."""

    kind: str
    loaded: int
    reinitialised: tuple[str, ...]
    note: str = ""


def load(model, arch: str, path: str | Path, classes: list[str] | None = None) -> InitReport:
    """Set ``model``'s weights (an ``arch`` model of ours, for ``classes``) from ``path``; see the module
    docstring."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"train.init_from: {path}: no such file or directory")
    if path.is_dir():
        run_dir = layout.init_from_home(path)
        checkpoint = path if path.name.startswith(layout.CHECKPOINT_PREFIX) else None
        source, note = _layers(trained_run.load_model(run_dir, _ours_kind(run_dir), checkpoint)), ""
        kind = "checkpoint" if checkpoint else "run"
        if classes is not None and trained_run.load_summary(run_dir)["classes"] != list(classes):
            source.pop(HEAD)  # the same count of other classes: a classifier for them starts afresh
    elif path.name.endswith(".h5"):
        source, note = _keras_application(path, arch, model)
        kind = "keras.applications"
    else:
        raise UserError(f"train.init_from: {path}: neither a keras.applications .h5/.weights.h5 file nor a run "
                        "directory or checkpoint of ours")
    loaded, fresh = 0, []
    for layer in model.layers:
        if not layer.weights:
            continue
        arrays = source.get(layer.name)
        wanted = [tuple(w.shape) for w in layer.weights]
        found = None if arrays is None else [tuple(a.shape) for a in arrays]
        if found == wanted:
            layer.set_weights(arrays)
            loaded += 1
        elif layer.name == HEAD:
            fresh.append(layer.name)  # other classes, or a file without its top
        else:
            raise UserError(f"train.init_from: {path}: layer {layer.name} does not fit: the model's shapes are "
                            f"{wanted}, the {kind}'s {found or 'missing'} (weights of another arch?)")
    return InitReport(kind, loaded, tuple(fresh), note)


def digest(path: str | Path) -> str:
    """sha256 of the weights ``load`` reads from ``path`` (the file, the run's model file or the checkpoint's
    state): part of the run's fingerprint, so new weights under the same path train afresh."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"train.init_from: {path}: no such file or directory")
    if path.is_dir() and path.name.startswith(layout.CHECKPOINT_PREFIX):
        return file_sha256(path / layout.CHECKPOINT_STATE)
    if path.is_dir():
        return file_sha256(path / layout.WEIGHTS[_ours_kind(path)])
    return file_sha256(path)


def _ours_kind(run_dir: Path) -> str:
    """EMA weights when the run kept them (then its checkpoints hold them too), raw ones otherwise."""
    return "ema" if (run_dir / layout.EMA_MODEL).exists() else "raw"


def _layers(model) -> dict[str, list[np.ndarray]]:
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


def keras_counterpart(arch: str) -> tuple[str, tuple, float, dict[str, str]] | None:
    """keras.applications' builder of ``arch``, its block table and depth, and the block roles it names
    otherwise than we do; None for an arch it does not have."""
    if arch in efficientnet.VARIANTS:
        return "EfficientNetB" + arch[-1], efficientnet.B0_STAGES, efficientnet.VARIANTS[arch].depth, {}
    if arch in efficientnet_v2.VARIANTS:
        table, variant = efficientnet_v2.VARIANTS[arch]
        return ("EfficientNetV2" + arch.split("-")[1].upper(), efficientnet_v2.TABLES[table], variant.depth,
                {"dwconv": "dwconv2"})
    return None


def keras_block_names(arch: str) -> list[str]:
    """keras.applications' block prefixes (block1a, block2a, block2b, ...) in our blocks' order."""
    _, table, depth, _ = keras_counterpart(arch)
    return [f"block{s + 1}{string.ascii_lowercase[j]}" for s, stage in enumerate(table)
            for j in range(round_repeats(stage.repeats, depth))]


def _keras_application(path: Path, arch: str, model) -> tuple[dict[str, list[np.ndarray]], str]:
    """The file's weights by our layer names, and a note when its input normalisation is not ours."""
    import keras

    counterpart = keras_counterpart(arch)
    if counterpart is None:
        raise UserError(f"train.init_from: {path}: keras.applications weights need an EfficientNet B0-B7 or "
                        f"EfficientNetV2 arch, not {arch}")
    builder, _, _, roles = counterpart
    top, classes = _keras_top(path)
    size = model.input_shape[1] or native_size(arch)  # a model of any size (stage-wise): the weights are the same
    reference = getattr(keras.applications, builder)(weights=None, include_top=top, classes=classes or 1000,
                                                     input_shape=(size, size, 3))
    try:
        reference.load_weights(str(path))
    except (ValueError, KeyError) as err:
        raise UserError(f"train.init_from: {path}: not keras.applications {arch} weights: {err}") from None
    by_keras = _layers(reference)
    blocks = {f"block{i + 1:02d}": name for i, name in enumerate(keras_block_names(arch))}
    source = {}
    for layer in model.layers:
        prefix, _, role = layer.name.partition("_")
        name = KERAS_NAMES.get(layer.name) or (f"{blocks[prefix]}_{roles.get(role, role)}" if prefix in blocks
                                               else layer.name)
        if name in by_keras:
            source[layer.name] = by_keras[name]
    # EfficientNetV2-S/M/L scale their inputs to [-1, 1] (no weights, nothing a file could change); the others
    # normalise with what their Normalization layer holds (V1: adapted weights; V2-B0-B3: ImageNet's, as constants)
    norm = next((layer for layer in reference.layers if isinstance(layer, keras.layers.Normalization)), None)
    return source, _normalisation_note(norm.get_weights()) if norm and norm.weights else ""


def _normalisation_note(arrays: list[np.ndarray]) -> str:
    """Our model normalises with ImageNet's mean and std; say so when the file's layer holds other values.

    keras.applications' ImageNet files hold the std as "variance" (its code then rescales by 1/sqrt(std) once
    more, which gives the same (x/255 - mean) / std as ours); a file written with variance = std^2 also
    matches."""
    mean, variance = arrays[0], arrays[1]
    mean_ok = np.allclose(mean * 255, IMAGENET_MEAN, rtol=1e-3)
    std = np.asarray(IMAGENET_STD) / 255
    if mean_ok and (np.allclose(variance, std, rtol=1e-3) or np.allclose(variance, std ** 2, rtol=1e-3)):
        return ""
    return (f"the file's input normalisation (mean {np.round(mean, 4).tolist()}, variance "
            f"{np.round(variance, 4).tolist()}) is not ImageNet's, which this model uses: its backbone will see "
            "inputs scaled differently from those it was trained on")


def _keras_top(path: Path) -> tuple[bool, int | None]:
    """Whether the file holds keras.applications' classifier, and its class count."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "model_weights" in f or "layer_names" in f.attrs:  # legacy .h5 (saved model or weights only)
                group = f["model_weights"] if "model_weights" in f else f
                if "predictions" not in group:
                    return False, None
                return True, int(group["predictions"]["predictions"]["bias"].shape[0])
            if "layers" in f:  # Keras 3 .weights.h5: layers by type, the classifier is the only Dense
                dense = f["layers"].get("dense")
                return (True, int(dense["vars"]["1"].shape[0])) if dense is not None else (False, None)
    except OSError as err:
        raise UserError(f"train.init_from: {path}: not an HDF5 weights file ({err})") from None
    raise UserError(f"train.init_from: {path}: an HDF5 file without Keras weights")
