"""AutoAugment (policy v0) and RandAugment on uint8 HWC images, as TensorFlow graph ops.

Semantics follow the TensorFlow reference used for EfficientNet (Cubuk et al., AutoAugment,
arXiv:1805.09501; RandAugment, arXiv:1909.13719; the TPU EfficientNet ``policy_v0``):
an op's level in [0, 10] (RandAugment's magnitude up to 20, extending the ranges) maps to its argument as
below, affine ops fill with grey (128),
and each random choice is stateless, drawn from a per-image ``seed`` (shape [2], int32/64),
so a run's augmentations are reproducible. The sub-policy table and the op list are data
shared with the DALI backend (``effnet.data.dali``).
"""
from __future__ import annotations

import math

import tensorflow as tf

MAX_LEVEL = 10.0
FILL = 128
# Pixel constants of the reference, at its 224 px training size.
AUTOAUGMENT_CONSTANTS = {"translate": 250, "cutout": 100}
RANDAUGMENT_CONSTANTS = {"translate": 100, "cutout": 40}

# EfficientNet's AutoAugment policy v0: 25 sub-policies of two (op, probability, level).
POLICY_V0 = (
    (("Equalize", 0.8, 1), ("ShearY", 0.8, 4)),
    (("Color", 0.4, 9), ("Equalize", 0.6, 3)),
    (("Color", 0.4, 1), ("Rotate", 0.6, 8)),
    (("Solarize", 0.8, 3), ("Equalize", 0.4, 7)),
    (("Solarize", 0.4, 2), ("Solarize", 0.6, 2)),
    (("Color", 0.2, 0), ("Equalize", 0.8, 8)),
    (("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)),
    (("ShearX", 0.2, 9), ("Rotate", 0.6, 8)),
    (("Color", 0.6, 1), ("Equalize", 1.0, 2)),
    (("Invert", 0.4, 9), ("Rotate", 0.6, 0)),
    (("Equalize", 1.0, 9), ("ShearY", 0.6, 3)),
    (("Color", 0.4, 7), ("Equalize", 0.6, 0)),
    (("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)),
    (("Solarize", 0.6, 8), ("Color", 0.6, 9)),
    (("Solarize", 0.2, 4), ("Rotate", 0.8, 9)),
    (("Rotate", 1.0, 7), ("TranslateY", 0.8, 9)),
    (("ShearX", 0.0, 0), ("Solarize", 0.8, 4)),
    (("ShearY", 0.8, 0), ("Color", 0.6, 4)),
    (("Color", 1.0, 0), ("Rotate", 0.6, 2)),
    (("Equalize", 0.8, 4), ("Equalize", 0.0, 8)),
    (("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)),
    (("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)),
    (("Posterize", 0.8, 2), ("Solarize", 0.6, 10)),
    (("Solarize", 0.6, 8), ("Equalize", 0.6, 1)),
    (("Color", 0.8, 6), ("Rotate", 0.4, 5)),
)

RANDAUGMENT_LAYERS = 2
RANDAUGMENT_MAGNITUDE = 10
RANDAUGMENT_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast",
                   "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout", "SolarizeAdd")


# ---- pixel ops (uint8 in, uint8 out) ---------------------------------------------------------


def blend(image1: tf.Tensor, image2: tf.Tensor, factor) -> tf.Tensor:
    """``image1 + factor * (image2 - image1)``, clipped to uint8 (factor > 1 extrapolates)."""
    a, b = tf.cast(image1, tf.float32), tf.cast(image2, tf.float32)
    return tf.cast(tf.clip_by_value(a + factor * (b - a), 0.0, 255.0), tf.uint8)


def invert(image):
    return 255 - image


def solarize(image, threshold):
    """Invert the pixels at or above ``threshold``."""
    return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


def solarize_add(image, addition, threshold=128):
    """Add ``addition`` to the pixels below ``threshold``."""
    added = tf.cast(tf.clip_by_value(tf.cast(image, tf.int32) + addition, 0, 255), tf.uint8)
    return tf.where(tf.cast(image, tf.int32) < threshold, added, image)


def posterize(image, bits):
    """Keep the ``bits`` most significant bits of each channel."""
    shift = tf.cast(8 - bits, tf.uint8)
    return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def grayscale(image):
    return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))


def color(image, factor):
    return blend(grayscale(image), image, factor)


def contrast(image, factor):
    mean = tf.reduce_mean(tf.cast(tf.image.rgb_to_grayscale(image), tf.float32))
    return blend(tf.fill(tf.shape(image), tf.cast(mean, tf.uint8)), image, factor)


def brightness(image, factor):
    return blend(tf.zeros_like(image), image, factor)


def sharpness(image, factor):
    """Blend with a 3x3 smoothed copy (border pixels unsmoothed), as PIL's ImageEnhance.Sharpness."""
    x = tf.cast(image, tf.float32)[None]
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], padding="VALID")[0]
    smooth = tf.pad(tf.round(smooth), [[1, 1], [1, 1], [0, 0]])
    interior = tf.pad(tf.ones_like(smooth[1:-1, 1:-1]), [[1, 1], [1, 1], [0, 0]]) > 0
    degenerate = tf.cast(tf.where(interior, smooth, x[0]), tf.uint8)
    return blend(degenerate, image, factor)


def autocontrast(image):
    """Stretch each channel to the full [0, 255] range."""
    x = tf.cast(image, tf.float32)
    lo = tf.reduce_min(x, axis=[0, 1])
    hi = tf.reduce_max(x, axis=[0, 1])
    scaled = (x - lo) * 255.0 / tf.maximum(hi - lo, 1.0)
    return tf.cast(tf.where(hi > lo, tf.clip_by_value(scaled, 0, 255), x), tf.uint8)


def _equalize_channel(channel):
    histogram = tf.histogram_fixed_width(tf.cast(channel, tf.int32), [0, 255], nbins=256)
    nonzero = tf.boolean_mask(histogram, histogram > 0)
    step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
    lut = (tf.cumsum(histogram) + step // 2) // tf.maximum(step, 1)
    lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
    return tf.where(step == 0, channel, tf.cast(tf.gather(lut, tf.cast(channel, tf.int32)), tf.uint8))


def equalize(image):
    """Histogram equalisation per channel (PIL's ImageOps.equalize)."""
    return tf.stack([_equalize_channel(image[:, :, c]) for c in range(3)], axis=-1)


def _transform(image, transform):
    """Apply an 8-parameter projective transform (output -> input coordinates), nearest, grey fill."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=tf.cast(tf.reshape(transform, [1, 8]), tf.float32),
        output_shape=tf.stack([h, w]), fill_value=float(FILL), interpolation="NEAREST", fill_mode="CONSTANT")
    return out[0]


def rotate(image, degrees):
    """Rotate about the centre by ``degrees`` (counter-clockwise)."""
    h, w = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    a = -degrees * math.pi / 180.0
    cos, sin = tf.cos(a), tf.sin(a)
    x_off = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2.0
    y_off = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2.0
    return _transform(image, tf.stack([cos, -sin, x_off, sin, cos, y_off, 0.0, 0.0]))


def shear_x(image, level):
    return _transform(image, tf.stack([1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]))


def shear_y(image, level):
    return _transform(image, tf.stack([1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0]))


def translate_x(image, pixels):
    return _transform(image, tf.stack([1.0, 0.0, -pixels, 0.0, 1.0, 0.0, 0.0, 0.0]))


def translate_y(image, pixels):
    return _transform(image, tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, -pixels, 0.0, 0.0]))


def cutout(image, pad, seed):
    """Grey out a square of side ``2 * pad`` centred at a random pixel."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    cy = tf.random.stateless_uniform([], seed, 0, h, tf.int32)
    cx = tf.random.stateless_uniform([], seed + 1, 0, w, tf.int32)
    ys, xs = tf.range(h)[:, None], tf.range(w)[None, :]
    inside = (ys >= cy - pad) & (ys < cy + pad) & (xs >= cx - pad) & (xs < cx + pad)
    return tf.where(inside[:, :, None], tf.cast(FILL, tf.uint8), image)


# ---- levels -> arguments, and dispatch by name --------------------------------------------------


def _signed(value, seed):
    """``value`` with a random sign."""
    return tf.where(tf.random.stateless_uniform([], seed) < 0.5, -value, value)


def _enhance(level):
    return level / MAX_LEVEL * 1.8 + 0.1


def apply_op(name: str, image, level: float, seed, constants: dict[str, int]):
    """Apply op ``name`` at ``level`` (0-10, or up to 20 beyond the reference's ranges) to ``image``."""
    level = tf.cast(level, tf.float32)
    ops = {
        "AutoContrast": lambda: autocontrast(image),
        "Equalize": lambda: equalize(image),
        "Invert": lambda: invert(image),
        "Rotate": lambda: rotate(image, _signed(level / MAX_LEVEL * 30.0, seed)),
        "Posterize": lambda: posterize(image, tf.cast(level / MAX_LEVEL * 4, tf.int32)),
        "Solarize": lambda: solarize(image, tf.cast(level / MAX_LEVEL * 256, tf.int32)),
        "SolarizeAdd": lambda: solarize_add(image, tf.cast(level / MAX_LEVEL * 110, tf.int32)),
        "Color": lambda: color(image, _enhance(level)),
        "Contrast": lambda: contrast(image, _enhance(level)),
        "Brightness": lambda: brightness(image, _enhance(level)),
        "Sharpness": lambda: sharpness(image, _enhance(level)),
        "ShearX": lambda: shear_x(image, _signed(level / MAX_LEVEL * 0.3, seed)),
        "ShearY": lambda: shear_y(image, _signed(level / MAX_LEVEL * 0.3, seed)),
        "TranslateX": lambda: translate_x(image, _signed(level / MAX_LEVEL * constants["translate"], seed)),
        "TranslateY": lambda: translate_y(image, _signed(level / MAX_LEVEL * constants["translate"], seed)),
        "Cutout": lambda: cutout(image, tf.cast(level / MAX_LEVEL * constants["cutout"], tf.int32), seed),
    }
    return ops[name]()


def _switch(names, index, image, level, op_seed, constants):
    """Apply op ``names[index]`` at ``level``: one switch over the distinct ops.

    (A switch over whole sub-policies would schedule every branch's ops as dead ops per image, which made
    policy v0 more than twice as slow per image.)
    """
    branches = [lambda name=name: apply_op(name, image, level, op_seed, constants) for name in names]
    return tf.switch_case(index, branches)


def _apply_one_of(names, index, image, level, op_seed, probability, gate_seed, constants):
    """With ``probability``, apply op ``names[index]`` at ``level``."""
    return tf.cond(tf.random.stateless_uniform([], gate_seed) < probability,
                   lambda: _switch(names, index, image, level, op_seed, constants), lambda: image)


def autoaugment(image: tf.Tensor, seed: tf.Tensor, policy=POLICY_V0) -> tf.Tensor:
    """Apply one randomly chosen sub-policy of ``policy`` (default v0) to a uint8 HWC image."""
    names = sorted({name for sub_policy in policy for name, _, _ in sub_policy})
    stages = len(policy[0])
    seeds = tf.random.experimental.stateless_split(seed, 1 + 2 * stages)
    chosen = tf.random.stateless_uniform([], seeds[0], 0, len(policy), tf.int32)
    out = image
    for k in range(stages):
        op = tf.gather([names.index(sub_policy[k][0]) for sub_policy in policy], chosen)
        probability = tf.gather([float(sub_policy[k][1]) for sub_policy in policy], chosen)
        level = tf.gather([float(sub_policy[k][2]) for sub_policy in policy], chosen)
        out = _apply_one_of(names, op, out, level, seeds[1 + 2 * k], probability, seeds[2 + 2 * k],
                            AUTOAUGMENT_CONSTANTS)
    return tf.ensure_shape(out, image.shape)


def randaugment(image: tf.Tensor, seed: tf.Tensor, layers: int = RANDAUGMENT_LAYERS,
                magnitude: float = RANDAUGMENT_MAGNITUDE) -> tf.Tensor:
    """``layers`` times: pick one of RANDAUGMENT_OPS uniformly and apply it at ``magnitude`` (of 10).

    As the reference, the chosen op is always applied (the reference draws a probability
    in [0.2, 0.8] per op but never uses it).
    """
    seeds = tf.random.experimental.stateless_split(seed, 2 * layers)
    out = image
    for layer in range(layers):
        op = tf.random.stateless_uniform([], seeds[2 * layer], 0, len(RANDAUGMENT_OPS), tf.int32)
        out = _switch(RANDAUGMENT_OPS, op, out, magnitude, seeds[2 * layer + 1], RANDAUGMENT_CONSTANTS)
    return tf.ensure_shape(out, image.shape)
