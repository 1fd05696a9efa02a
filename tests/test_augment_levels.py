"""AutoAugment / RandAugment ops mean the reference's levels on both backends, op by op, level by level."""
import numpy as np
import pytest
import tensorflow as tf

from effnet.data import autoaugment, dali_augment

SIZE = 40
# Pixel constants small enough that translations and cutouts stay visible on a 40 px image.
CONSTANTS = {"translate": 12, "cutout": 8}


def fixed_image() -> np.ndarray:
    """Smooth ramps with a noisy band: every op changes it, and a one-pixel shift changes it little."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    image = np.stack([xx * 6, yy * 6, (xx + yy) * 3], -1).astype(np.uint8)
    image[10:20, 5:30] = np.random.default_rng(0).integers(0, 256, (10, 25, 3))
    return image


def dali_apply(name: str, level: int, image: np.ndarray, count: int = 4) -> list[np.ndarray]:
    """``count`` outputs of the DALI op ``name`` at ``level`` on copies of ``image`` (CPU pipeline)."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=count, num_threads=1, device_id=None, seed=7)
    def pipe():
        images = fn.external_source(source=lambda: [image] * count, layout="HWC", dtype=types.UINT8)
        kwargs = dali_augment.affine_kwargs() if name in dali_augment.GEOMETRIC else {}
        top = dali_augment.levels(level)  # above 10: more bins, ranges extended (RandAugment's 12, 15, 20)
        return dali_augment.dali_ops(CONSTANTS, SIZE, top)[name](images, magnitude_bin=level,
                                                                  num_magnitude_bins=top + 1, **kwargs)

    p = pipe()
    p.build()
    (out,) = p.run()
    return [np.array(out[i]) for i in range(count)]


def tf_apply(name: str, level: int, image: np.ndarray, seed: int) -> np.ndarray:
    return autoaugment.apply_op(name, tf.constant(image), level, tf.constant([seed, 1]), CONSTANTS).numpy()


# Largest mean absolute difference (of 255) allowed between DALI and tf.data: 0 where both compute the
# same integers; enhance ops round differently; DALI's Equalize uses OpenCV's formula, not PIL's;
# nearest-neighbour warps differ by DALI's half-pixel centres (a one-pixel shift here is about 6), more as the warp
# grows beyond the reference's levels (shears: 6.3 at level 20, 0.6 of the width): the bound grows from level 15.
TOLERANCE = {"Invert": 0, "Posterize": 0, "Solarize": 0, "SolarizeAdd": 0, "AutoContrast": 0.5, "Rotate": 1,
             "Color": 1, "Contrast": 1, "Brightness": 1, "Sharpness": 0.5, "Equalize": 4, "ShearX": 5,
             "ShearY": 5, "TranslateX": 0, "TranslateY": 0}


@pytest.mark.parametrize("name", sorted(TOLERANCE))
def test_dali_op_equals_tfdata_op_at_every_level(name):
    image = fixed_image()
    for level in (0, 2, 6, 10, 12, 15, 20):
        # tf.data draws the sign of signed ops from the seed: compare against both signs.
        references = [tf_apply(name, level, image, seed) for seed in range(8 if name in dali_augment.GEOMETRIC else 1)]
        for out in dali_apply(name, level, image):
            error = min(np.abs(out.astype(int) - ref.astype(int)).mean() for ref in references)
            allowed = TOLERANCE[name] * max(1, level / 15)
            assert error <= allowed, f"{name} level {level}: mean |DALI - tf.data| = {error:.2f}"


def test_reference_values_of_levels():
    image = fixed_image()
    # Posterize at level 6 keeps int(6 / 10 * 4) = 2 bits; at level 10, 4 bits.
    for level, bits in ((6, 2), (10, 4)):
        mask = 0xFF ^ ((1 << (8 - bits)) - 1)
        for out in [tf_apply("Posterize", level, image, 0), *dali_apply("Posterize", level, image)]:
            np.testing.assert_array_equal(out, image & mask)
    # Solarize at level 3 inverts pixels >= int(0.3 * 256) = 76: 76 is inverted, 75 is not.
    ramp = np.broadcast_to(np.arange(70, 80, dtype=np.uint8)[None, :, None], (SIZE, 10, 3)).copy()
    expected = np.where(ramp < 76, ramp, 255 - ramp)
    for out in [tf_apply("Solarize", 3, ramp, 0), *dali_apply("Solarize", 3, ramp)]:
        np.testing.assert_array_equal(out, expected)
    # Rotate at level 10 turns by 30 degrees, either way.
    tilted = {autoaugment.rotate(tf.constant(image), angle).numpy().tobytes() for angle in (30.0, -30.0)}
    assert {tf_apply("Rotate", 10, image, s).tobytes() for s in range(8)} == tilted
    # TranslateX at level 5 moves the content by 0.5 * 12 = 6 px and fills with grey.
    for out in dali_apply("TranslateX", 5, image):
        moved_right = np.array_equal(out[:, 6:], image[:, :-6]) and (out[:, :6] == 128).all()
        moved_left = np.array_equal(out[:, :-6], image[:, 6:]) and (out[:, -6:] == 128).all()
        assert moved_right or moved_left


def test_cutout_greys_a_square_of_the_level_size():
    image = fixed_image()
    for level in (5, 10):
        side = 2 * int(level / 10 * CONSTANTS["cutout"])
        outs = dali_apply("Cutout", level, image, count=8) + [tf_apply("Cutout", level, image, s) for s in range(8)]
        for out in outs:
            rows, cols = np.nonzero((out != image).any(axis=-1))
            assert (out[rows, cols] == 128).all()
            assert rows.max() - rows.min() < side and cols.max() - cols.min() < side  # clipped at the border
        areas = [np.count_nonzero((out != image).any(axis=-1)) for out in outs]
        assert max(areas) > (side - 2) ** 2 * 0.9  # a square well inside the image is whole


def test_randaugment_applies_every_chosen_op_at_full_magnitude():
    image = fixed_image()
    # tf.data: one layer, 200 draws; only ops that leave this image as it is (Solarize at level 10 inverts
    # nothing) may return it unchanged, so about 1 in 16, not the half that p ~ U(0.2, 0.8) would give.
    unchanged = sum(np.array_equal(autoaugment.randaugment(tf.constant(image), tf.constant([s, 3]), layers=1)
                                   .numpy(), image) for s in range(200))
    assert unchanged < 40, unchanged
    # DALI: magnitude 10 of 10 (11 bins), every chosen op applied: Posterize alone keeps exactly 4 bits.
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=4, num_threads=1, device_id=None, seed=3)
    def pipe():
        images = fn.external_source(source=lambda: [image] * 4, layout="HWC", dtype=types.UINT8)
        return dali_augment.rand_augment(images, SIZE, layers=1, names=("Posterize",))

    p = pipe()
    p.build()
    (out,) = p.run()
    for i in range(4):
        np.testing.assert_array_equal(np.array(out[i]), image & 0xF0)
