"""Stage-wise (progressive) training, as EfficientNetV2 trains: small images and weak regularisation first.

``train.stages: N`` splits the epochs into N stages (``epochs // N`` each, the last one takes the rest) and moves
four factors linearly from their first-stage value (the ``train.base_*`` keys) to their last-stage value (the
run's own keys): the training image size (``model.image_size``), mixup alpha, CutMix alpha and RandAugment's
magnitude. Like NVIDIA's runner (DeepLearningExamples, TensorFlow2/Classification/ConvNets/runtime/runner.py),
the regularisation follows ``linspace(first, last, N)``; unlike it, the image size does too (its first stage
trains at ``base + (final - base) / N``, not at the base size the key names), and a first-stage value left null
keeps that factor at its final value (the runner's defaults would schedule it from 0, or RandAugment from 5).
Sizes are rounded to whole pixels and magnitudes to whole levels, halves up (DALI's RandAugment takes whole
magnitude bins; both backends get the same whole level). Evaluation is always at the final size.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from effnet.core.errors import UserError

FACTORS = ("image_size", "mixup_alpha", "cutmix_alpha", "randaug_magnitude")  # what the stages schedule
BASE_KEYS = tuple(f"base_{factor}" for factor in FACTORS)  # their first-stage values in the train section


@dataclass(frozen=True)
class Stage:
    """One stage: its epochs ``[first_epoch, end_epoch)`` and the values it trains with."""

    index: int
    first_epoch: int
    end_epoch: int
    image_size: int
    mixup_alpha: float
    cutmix_alpha: float
    randaug_magnitude: int

    def record(self) -> dict:
        """The stage as a plain dict (dllogger records, train_summary.json)."""
        return asdict(self)


def check(train: dict, image_size: int | None) -> None:
    """UserError naming the key when the stage keys of the validated ``train`` section cannot work together;
    ``image_size``: the final size, None where it is not known yet (the workflow plans before it builds a model)."""
    count, epochs = train["stages"], train["epochs"]
    base = [key for key in BASE_KEYS if train[key] is not None]
    if count == 1:
        if base:
            raise UserError(f"train.{', train.'.join(base)}: first-stage values, but train.stages is 1 (one stage "
                            "trains at the final values throughout): set train.stages above 1, or remove them")
        return
    if epochs < count:
        raise UserError(f"train.stages: {count} stages need at least {count} epochs, train.epochs is {epochs}")
    if "base_image_size" not in base:
        raise UserError(f"train.stages: {count} stages need train.base_image_size, the first stage's image size "
                        "(the last stage's is model.image_size)")
    if image_size is not None and train["base_image_size"] > image_size:
        raise UserError(f"train.base_image_size: {train['base_image_size']} is above the final size, {image_size} "
                        "(model.image_size, or the arch's native size when null); stages grow the images")
    if "base_randaug_magnitude" in base and train["augment"] != "randaugment":
        raise UserError(f"train.base_randaug_magnitude: set, but train.augment is {train['augment']}, "
                        "not randaugment")


def schedule(train: dict, image_size: int) -> tuple[Stage, ...]:
    """The stages of the validated ``train`` section at the final ``image_size`` (``check``ed first, before any
    data is read)."""
    check(train, image_size)
    count, epochs = train["stages"], train["epochs"]
    base = {key: train[key] for key in BASE_KEYS if train[key] is not None}
    final = {factor: image_size if factor == "image_size" else train[factor] for factor in FACTORS}
    values = {factor: np.linspace(base.get(f"base_{factor}", last), last, count) for factor, last in final.items()}
    per_stage = epochs // count
    return tuple(Stage(i, i * per_stage, epochs if i == count - 1 else (i + 1) * per_stage,
                       _whole(values["image_size"][i]), float(values["mixup_alpha"][i]),
                       float(values["cutmix_alpha"][i]), _whole(values["randaug_magnitude"][i]))
                 for i in range(count))


def _whole(value: float) -> int:
    """``value`` rounded half up (Python's round() takes halves to the even neighbour)."""
    return int(np.floor(value + 0.5))


def remaining(stages: tuple[Stage, ...], epoch: int) -> tuple[Stage, ...]:
    """The stages still to train from ``epoch`` on (the one holding it first)."""
    return tuple(stage for stage in stages if stage.end_epoch > epoch)
