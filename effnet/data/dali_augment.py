"""AutoAugment (policy v0) and RandAugment for the DALI backend, meaning what the tf.data ops mean.

DALI's automatic-augmentation library maps a magnitude bin ``b`` of ``n`` to
``linspace(lo, hi, n)[b]``; with ``n = 11`` bins the bin is the reference's level (0-10), and RandAugment above
10 takes ``magnitude + 1`` bins over ranges extended alike (``levels``).
Each op below is set to the tf.data op's direction, range and rounding
(``effnet.data.autoaugment.apply_op``), level by level:

- Posterize keeps ``int(L/10 * 4)`` bits (DALI's parameter counts bits kept; 0 bits keeps
  1, as TensorFlow's clamped shift does); Solarize inverts pixels >= ``int(L/10 * 256)``
  (the reference's direction: a higher level inverts fewer pixels); SolarizeAdd adds
  ``int(L/10 * 110)`` below 128.
- Color, Contrast, Brightness, Sharpness: factor ``L/10 * 1.8 + 0.1``, never negated.
- Rotate ``L/10 * 30`` degrees, Shear ``L/10 * 0.3``, Translate ``L/10 * constant`` px and
  Cutout half-side ``int(L/10 * constant)`` px, with a random sign; geometric ops use
  nearest-neighbour sampling and grey (128) fill, as the reference.
- Equalize follows OpenCV's formula in DALI (PIL's in tf.data); pixels may differ by a few levels.
"""
from __future__ import annotations

import math

import numpy as np

from effnet.data import autoaugment

BINS = int(autoaugment.MAX_LEVEL) + 1
GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")  # take affine_kwargs()


def _truncate(magnitude) -> int:
    """``int()`` of a level's argument, immune to linspace's rounding (3 * 11.0 = 32.99...)."""
    return int(math.floor(float(magnitude) + 1e-6))


def _posterize_mask(magnitude) -> np.ndarray:
    bits = min(max(_truncate(magnitude), 1), 8)
    return np.array(0xFF ^ ((1 << (8 - bits)) - 1), dtype=np.uint8)


def dali_ops(constants: dict[str, int], image_size: int, top_level: int = BINS - 1) -> dict:
    """Every op of ``autoaugment.RANDAUGMENT_OPS`` as a DALI augmentation, by reference name, for
    ``top_level + 1`` magnitude bins (bin = level; above 10 the ranges extend as the tf.data ops' do)."""
    from nvidia.dali import fn, types
    from nvidia.dali import math as dmath
    from nvidia.dali.auto_aug import augmentations as a
    from nvidia.dali.auto_aug.core import augmentation

    scale = top_level / autoaugment.MAX_LEVEL

    def upto(top):
        return (0, top * scale)

    enhance = dict(mag_range=(-0.9, -0.9 + 1.8 * scale), randomly_negate=False)  # factor 1 + m: 0.1 ... 1.9 at 10

    @augmentation(mag_range=upto(constants["cutout"]), randomly_negate=False,
                  mag_to_param=lambda m: np.float32(_truncate(m)))
    def cutout(data, pad):
        centre = fn.random.uniform(values=[float(v) for v in range(image_size)], shape=[2])
        return fn.erase(data, anchor=centre - pad, shape=fn.stack(pad, pad) * 2.0, axis_names="HW",
                        fill_value=autoaugment.FILL)

    @augmentation(mag_range=upto(110), randomly_negate=False, mag_to_param=lambda m: np.int16(_truncate(m)))
    def solarize_add(data, addition):  # DALI's own wraps around above 255 (levels over 10 reach it)
        added = fn.cast(dmath.min(fn.cast(data, dtype=types.INT16) + addition, 255), dtype=types.UINT8)
        below = data < types.Constant(128, dtype=types.UINT8)
        return below * added + (below ^ True) * data

    ops = {
        "AutoContrast": a.auto_contrast, "Equalize": a.equalize, "Invert": a.invert,
        "Rotate": a.rotate.augmentation(mag_range=upto(30)),
        "ShearX": a.shear_x.augmentation(mag_range=upto(0.3)),
        "ShearY": a.shear_y.augmentation(mag_range=upto(0.3)),
        "TranslateX": a.translate_x_no_shape.augmentation(mag_range=upto(constants["translate"])),
        "TranslateY": a.translate_y_no_shape.augmentation(mag_range=upto(constants["translate"])),
        "Posterize": a.posterize.augmentation(mag_range=upto(4), mag_to_param=_posterize_mask),
        "Solarize": a.solarize.augmentation(mag_range=upto(256), mag_to_param=lambda m: np.int32(_truncate(m))),
        "SolarizeAdd": solarize_add,
        "Color": a.color.augmentation(**enhance), "Contrast": a.contrast.augmentation(**enhance),
        "Brightness": a.brightness.augmentation(**enhance), "Sharpness": a.sharpness.augmentation(**enhance),
        "Cutout": cutout,
    }
    return ops


def levels(magnitude: int) -> int:
    """The top level (the last magnitude bin) of ops used at ``magnitude``: the reference's 10, or above it."""
    return max(BINS - 1, magnitude)


def affine_kwargs() -> dict:
    """Fill and interpolation of the GEOMETRIC ops: the reference's grey fill and nearest neighbour."""
    from nvidia.dali import types

    return dict(fill_value=autoaugment.FILL, interp_type=types.INTERP_NN)


def auto_augment(images, image_size: int):
    """AutoAugment policy v0 (``autoaugment.POLICY_V0``) with its 224 px pixel constants."""
    from nvidia.dali.auto_aug import auto_augment as aa
    from nvidia.dali.auto_aug.core import Policy

    ops = dali_ops(autoaugment.AUTOAUGMENT_CONSTANTS, image_size)
    sub_policies = [[(ops[name], probability, level) for name, probability, level in pair if probability > 0]
                    for pair in autoaugment.POLICY_V0]
    policy = Policy("policy_v0", num_magnitude_bins=BINS, sub_policies=sub_policies)
    return aa.apply_auto_augment(policy, images, **affine_kwargs())


def rand_augment(images, image_size: int, layers: int = autoaugment.RANDAUGMENT_LAYERS,
                 magnitude: int = autoaugment.RANDAUGMENT_MAGNITUDE, names=autoaugment.RANDAUGMENT_OPS):
    """RandAugment: ``layers`` ops drawn from ``names`` (the reference's 16), each always applied at
    ``magnitude`` (a whole level; 10 is the reference's top, up to 20 extends its ranges)."""
    from nvidia.dali.auto_aug import rand_augment as ra

    top = levels(magnitude)
    ops = dali_ops(autoaugment.RANDAUGMENT_CONSTANTS, image_size, top)
    affine = affine_kwargs() if set(names) & set(GEOMETRIC) else {}
    return ra.apply_rand_augment([ops[name] for name in names], images, n=layers, m=magnitude,
                                 num_magnitude_bins=top + 1, **affine)
