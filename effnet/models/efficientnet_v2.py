"""EfficientNetV2 B0-B3, S, M, L (Tan & Le, 2021, arXiv:2104.00298): block tables and scaling as data.

Early stages are fused-MBConv without squeeze-excite, later ones MBConv with it (1/4 of the block's input
filters). B0-B3 scale one base table by width and depth as V1 does, but round filters without V1's 10% rule;
S, M and L have tables of their own. Batch norm momentum 0.9, swish, the stem as wide as the first stage's
input, a 1280-wide head (scaled). The tables are those of the paper's reference code and of keras.applications'
EfficientNetV2*, whose weights load 1:1 (``train.init_from``).

Inputs are float images in [0, 255]; as keras.applications' pretrained V2 models expect them, B0-B3 normalise
with the ImageNet mean/std (as V1) and S, M, L scale to [-1, 1] (x/128 - 1).
"""
from __future__ import annotations

from functools import partial

import keras

from effnet.models.blocks import Architecture, BlockStage, Variant, build, round_filters, scale_stages
from effnet.models.registry import register

BN_MOMENTUM = 0.9
HEAD_FILTERS = 1280


def _table(*rows: tuple) -> tuple[BlockStage, ...]:
    """Rows of (in, out, kernel, repeats, expand, stride, se_ratio, fused)."""
    return tuple(BlockStage(*row) for row in rows)


# (in, out, kernel, repeats, expand, stride, squeeze-excite ratio, fused)
TABLES = {
    "base": _table(
        (32, 16, 3, 1, 1, 1, 0, True),
        (16, 32, 3, 2, 4, 2, 0, True),
        (32, 48, 3, 2, 4, 2, 0, True),
        (48, 96, 3, 3, 4, 2, 0.25, False),
        (96, 112, 3, 5, 6, 1, 0.25, False),
        (112, 192, 3, 8, 6, 2, 0.25, False),
    ),
    "s": _table(
        (24, 24, 3, 2, 1, 1, 0, True),
        (24, 48, 3, 4, 4, 2, 0, True),
        (48, 64, 3, 4, 4, 2, 0, True),
        (64, 128, 3, 6, 4, 2, 0.25, False),
        (128, 160, 3, 9, 6, 1, 0.25, False),
        (160, 256, 3, 15, 6, 2, 0.25, False),
    ),
    "m": _table(
        (24, 24, 3, 3, 1, 1, 0, True),
        (24, 48, 3, 5, 4, 2, 0, True),
        (48, 80, 3, 5, 4, 2, 0, True),
        (80, 160, 3, 7, 4, 2, 0.25, False),
        (160, 176, 3, 14, 6, 1, 0.25, False),
        (176, 304, 3, 18, 6, 2, 0.25, False),
        (304, 512, 3, 5, 6, 1, 0.25, False),
    ),
    "l": _table(
        (32, 32, 3, 4, 1, 1, 0, True),
        (32, 64, 3, 7, 4, 2, 0, True),
        (64, 96, 3, 7, 4, 2, 0, True),
        (96, 192, 3, 10, 4, 2, 0.25, False),
        (192, 224, 3, 19, 6, 1, 0.25, False),
        (224, 384, 3, 25, 6, 2, 0.25, False),
        (384, 640, 3, 7, 6, 1, 0.25, False),
    ),
}


VARIANTS = {  # name: (table, scaling)
    "efficientnetv2-b0": ("base", Variant(1.0, 1.0, 224, 0.2)),
    "efficientnetv2-b1": ("base", Variant(1.0, 1.1, 240, 0.2)),
    "efficientnetv2-b2": ("base", Variant(1.1, 1.2, 260, 0.3)),
    "efficientnetv2-b3": ("base", Variant(1.2, 1.4, 300, 0.3)),
    "efficientnetv2-s": ("s", Variant(1.0, 1.0, 384, 0.2)),
    "efficientnetv2-m": ("m", Variant(1.0, 1.0, 480, 0.3)),
    "efficientnetv2-l": ("l", Variant(1.0, 1.0, 480, 0.4)),
}


def scaled_stages(name: str) -> list[BlockStage]:
    """A variant's blocks, one BlockStage per block."""
    table, variant = VARIANTS[name]
    return scale_stages(TABLES[table], variant, min_fraction=0)


def architecture(name: str) -> Architecture:
    """A V2 variant's network: its table scaled, the stem as wide as its first block's input, the head's width."""
    table, variant = VARIANTS[name]
    blocks = tuple(scaled_stages(name))
    return Architecture(blocks, blocks[0].filters_in, round_filters(HEAD_FILTERS, variant.width, min_fraction=0),
                        variant.resolution, variant.dropout, BN_MOMENTUM,
                        "imagenet" if table == "base" else "signed")


def efficientnet_v2(name: str, **options) -> keras.Model:
    """Build one EfficientNetV2 variant; ``options`` as ``effnet.models.blocks.build`` takes them."""
    return build(architecture(name), name=name, **options)


for _name, (_, _variant) in VARIANTS.items():
    register(_name, partial(efficientnet_v2, _name), native_size=_variant.resolution)
