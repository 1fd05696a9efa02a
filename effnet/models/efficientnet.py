"""EfficientNet B0-B7 (Tan & Le, 2019, arXiv:1905.11946) as Keras 3 functional models.

The B0 block table and the compound-scaling coefficients are data; one builder scales
them for every variant. Details follow the paper and the reference implementations:
filters rounded to multiples of 8 (never more than 10% down), repeats rounded up,
squeeze-and-excite on 1/4 of the block's input filters, swish, identity shortcut when
stride 1 and in == out, per-sample drop-connect rising linearly over the blocks,
batch norm momentum 0.99 / epsilon 1e-3, conv kernels VarianceScaling(2, fan_out,
truncated normal), dense kernel VarianceScaling(1/3, fan_out, uniform).

Inputs are float images in [0, 255] (NHWC); the model normalises them with the ImageNet
mean/std and returns float32 logits, also under a mixed-precision policy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial

import keras
from keras import layers

from effnet.models.layers import batch_norm_layer
from effnet.models.registry import register

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3
STEM_FILTERS = 32
HEAD_FILTERS = 1280
SE_RATIO = 0.25


@dataclass(frozen=True)
class BlockStage:
    """One row of the B0 table: a stage of identical MBConv blocks."""

    filters_in: int
    filters_out: int
    kernel: int
    repeats: int
    expand: int
    stride: int


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


@dataclass(frozen=True)
class Variant:
    """Compound-scaling coefficients of one EfficientNet variant."""

    width: float
    depth: float
    resolution: int
    dropout: float


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


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale ``filters`` by ``width`` and round to a multiple of ``divisor``, never down by more than 10%."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    """Scale a stage's block count by ``depth``, rounding up."""
    return int(math.ceil(depth * repeats))


def conv_initializer(mode: str = "fan_out") -> keras.initializers.Initializer:
    return keras.initializers.VarianceScaling(2.0, mode=mode, distribution="truncated_normal")


def dense_initializer(mode: str = "fan_out") -> keras.initializers.Initializer:
    return keras.initializers.VarianceScaling(1.0 / 3.0, mode=mode, distribution="uniform")


@dataclass(frozen=True)
class BlockOptions:
    """What every block of one model shares."""

    activation: str
    batch_norm: str
    weight_init: str
    bn_momentum: float
    zero_init_residual: bool = False


def _bn(opts: BlockOptions, name: str, gamma: str = "ones") -> layers.Layer:
    return batch_norm_layer(opts.batch_norm, momentum=opts.bn_momentum, epsilon=BN_EPSILON,
                            gamma_initializer=gamma, name=name)


def _conv(filters: int, kernel: int, opts: BlockOptions, name: str, strides: int = 1) -> layers.Layer:
    return layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                         kernel_initializer=conv_initializer(opts.weight_init), name=name)


def conv_bn_act(x, filters: int, kernel: int, opts: BlockOptions, name: str, strides: int = 1):
    """Convolution, batch norm, activation: the stem, expansion and head convolutions."""
    x = _conv(filters, kernel, opts, f"{name}_conv", strides)(x)
    x = _bn(opts, f"{name}_bn")(x)
    return layers.Activation(opts.activation, name=f"{name}_activation")(x)


def squeeze_excite(x, filters_se: int, opts: BlockOptions, name: str):
    """Channel attention: global pooling, a bottleneck of ``filters_se`` units, sigmoid gates."""
    filters = x.shape[-1]
    init = conv_initializer(opts.weight_init)
    se = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    se = layers.Conv2D(filters_se, 1, activation=opts.activation, kernel_initializer=init,
                       name=f"{name}_reduce")(se)
    se = layers.Conv2D(filters, 1, activation="sigmoid", kernel_initializer=init, name=f"{name}_expand")(se)
    return layers.Multiply(name=f"{name}_excite")([x, se])


def mbconv(x, stage: BlockStage, opts: BlockOptions, drop_rate: float, name: str):
    """Mobile inverted bottleneck: expand (1x1), depthwise, squeeze-excite, project (1x1), shortcut."""
    inputs = x
    expanded = stage.filters_in * stage.expand
    if stage.expand != 1:
        x = conv_bn_act(x, expanded, 1, opts, f"{name}_expand")
    x = layers.DepthwiseConv2D(stage.kernel, strides=stage.stride, padding="same", use_bias=False,
                               depthwise_initializer=conv_initializer(opts.weight_init), name=f"{name}_dwconv")(x)
    x = _bn(opts, f"{name}_bn")(x)
    x = layers.Activation(opts.activation, name=f"{name}_activation")(x)
    x = squeeze_excite(x, max(1, int(stage.filters_in * SE_RATIO)), opts, f"{name}_se")
    x = _conv(stage.filters_out, 1, opts, f"{name}_project_conv")(x)
    residual = stage.stride == 1 and stage.filters_in == stage.filters_out
    # zero_init_residual: the block starts as the identity (Goyal et al. 2017; timm's zero_init_last).
    x = _bn(opts, f"{name}_project_bn", "zeros" if residual and opts.zero_init_residual else "ones")(x)
    if residual:
        if drop_rate > 0:
            # Drop the whole residual branch per sample (stochastic depth).
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(x)
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def scaled_stages(variant: Variant) -> list[BlockStage]:
    """The variant's blocks, one BlockStage per block (repeats expanded, later repeats stride 1)."""
    blocks = []
    for stage in B0_STAGES:
        stage = replace(stage, filters_in=round_filters(stage.filters_in, variant.width),
                        filters_out=round_filters(stage.filters_out, variant.width))
        for i in range(round_repeats(stage.repeats, variant.depth)):
            blocks.append(stage if i == 0 else replace(stage, filters_in=stage.filters_out, stride=1))
    return blocks


def efficientnet(variant: Variant, *, name: str, num_classes: int = 1000, image_size: int | None = None,
                 include_top: bool = True, pooling: str | None = None, dropout: float | None = None,
                 drop_connect: float = 0.2, activation: str = "swish", batch_norm: str = "plain",
                 weight_init: str = "fan_out", bn_momentum: float = BN_MOMENTUM,
                 zero_init_residual: bool = False) -> keras.Model:
    """Build one EfficientNet variant.

    ``image_size=None`` uses the variant's native resolution; ``dropout=None`` its dropout.
    ``include_top=False`` returns the final feature map (or its ``pooling`` "avg"/"max").
    ``batch_norm`` is "plain" or "sync" (Horovod cross-rank statistics); ``weight_init``
    is the VarianceScaling mode, "fan_out" (reference) or "fan_in". ``bn_momentum`` (0.99, the
    reference) sets how fast the batch-norm statistics move: a short run needs a smaller one, as the
    moving variance keeps ``bn_momentum ** steps`` of its initial 1.0. ``zero_init_residual``
    starts each residual block's last batch-norm scale at 0 (not the reference; trains faster
    from scratch in short runs).
    """
    size = image_size or variant.resolution
    opts = BlockOptions(activation, batch_norm, weight_init, bn_momentum, zero_init_residual)
    inputs = keras.Input((size, size, 3), name="images")
    x = layers.Normalization(mean=IMAGENET_MEAN, variance=[s * s for s in IMAGENET_STD], name="normalize")(inputs)
    x = conv_bn_act(x, round_filters(STEM_FILTERS, variant.width), 3, opts, "stem", strides=2)
    blocks = scaled_stages(variant)
    for i, block in enumerate(blocks):
        x = mbconv(x, block, opts, drop_connect * i / len(blocks), f"block{i + 1:02d}")
    x = conv_bn_act(x, round_filters(HEAD_FILTERS, variant.width), 1, opts, "head")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        rate = variant.dropout if dropout is None else dropout
        if rate > 0:
            x = layers.Dropout(rate, name="top_dropout")(x)
        # float32 even under mixed precision: the loss and softmax need full-precision logits.
        x = layers.Dense(num_classes, kernel_initializer=dense_initializer(weight_init), dtype="float32",
                         name="logits")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    return keras.Model(inputs, x, name=name)


for _name, _variant in {**VARIANTS, **TEST_VARIANTS}.items():
    register(_name, partial(efficientnet, _variant, name=_name), native_size=_variant.resolution)
