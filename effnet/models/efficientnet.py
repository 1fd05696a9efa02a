"""EfficientNet B0-B7 (Tan & Le, 2019, arXiv:1905.11946): the B0 block table and compound scaling as data.

One builder (``effnet.models.blocks.build``) scales the table for every variant: filters rounded to multiples of
8 (never more than 10% down), repeats rounded up, MBConv blocks with squeeze-and-excite on 1/4 of the block's
input filters, swish, batch norm momentum 0.99. Inputs are float images in [0, 255], normalised in the model with
the ImageNet mean/std, as keras.applications' EfficientNetB0-B7 (whose weights load 1:1).
"""
from __future__ import annotations

from functools import partial

import keras

from effnet.models.blocks import (IMAGENET_MEAN, IMAGENET_STD, Architecture, BlockStage, Variant, build,
                                  round_filters, round_repeats, scale_stages)
from effnet.models.registry import register

__all__ = ["B0_STAGES", "IMAGENET_MEAN", "IMAGENET_STD", "TEST_VARIANTS", "VARIANTS", "architecture", "efficientnet",
           "round_filters", "round_repeats", "scaled_stages"]

BN_MOMENTUM = 0.99
STEM_FILTERS = 32
HEAD_FILTERS = 1280

# EfficientNet-B0 (the paper's Table 1): (in, out, kernel, repeats, expand ratio, stride).
B0_STAGES = tuple(BlockStage(*row) for row in (
    (32, 16, 3, 1, 1, 1),
    (16, 24, 3, 2, 6, 2),
    (24, 40, 5, 2, 6, 2),
    (40, 80, 3, 3, 6, 2),
    (80, 112, 5, 3, 6, 1),
    (112, 192, 5, 4, 6, 2),
    (192, 320, 3, 1, 6, 1),
))


VARIANTS = {
    "efficientnet-b0": Variant(1.0, 1.0, 224, 0.2),
    "efficientnet-b1": Variant(1.0, 1.1, 240, 0.2),
    "efficientnet-b2": Variant(1.1, 1.2, 260, 0.3),
    "efficientnet-b3": Variant(1.2, 1.4, 300, 0.3),
    "efficientnet-b4": Variant(1.4, 1.8, 380, 0.4),
    "efficientnet-b5": Variant(1.6, 2.2, 456, 0.4),
    "efficientnet-b6": Variant(1.8, 2.6, 528, 0.5),
    "efficientnet-b7": Variant(2.0, 3.1, 600, 0.5),
}
# Not a paper variant: the family at its smallest, for tests and smoke runs (as timm registers
# test_efficientnet): a quarter of B0's filters, 8 blocks instead of 16 (9% of its parameters). Every kind of
# block is still there (expand 1 and 6, kernels 3 and 5, squeeze-excite, strides, a drop-connect shortcut), and
# a run starts in half B0's time (the graph's size, not the arithmetic, dominates a short CPU run).
TEST_VARIANTS = {"efficientnet-test": Variant(0.25, 0.3, 32, 0.2)}


def scaled_stages(variant: Variant) -> list[BlockStage]:
    """The variant's blocks, one BlockStage per block (repeats expanded, later repeats stride 1)."""
    return scale_stages(B0_STAGES, variant)


def architecture(variant: Variant) -> Architecture:
    """A V1 variant's network: B0's table scaled, stem and head widths, input normalised with ImageNet's mean/std."""
    return Architecture(tuple(scaled_stages(variant)), round_filters(STEM_FILTERS, variant.width),
                        round_filters(HEAD_FILTERS, variant.width), variant.resolution, variant.dropout, BN_MOMENTUM,
                        "imagenet")


def efficientnet(variant: Variant, *, name: str, **options) -> keras.Model:
    """Build one EfficientNet variant; ``options`` as ``effnet.models.blocks.build`` takes them."""
    return build(architecture(variant), name=name, **options)


for _name, _variant in {**VARIANTS, **TEST_VARIANTS}.items():
    register(_name, partial(efficientnet, _variant, name=_name), native_size=_variant.resolution)
