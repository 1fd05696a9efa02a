"""What the EfficientNet families share: block tables as data, their scaling, the blocks and one builder.

A family module (``efficientnet``, ``efficientnet_v2``) holds its block table and variants and turns a
variant into an ``Architecture``; ``build`` makes the Keras 3 functional model of any architecture. Blocks
follow the reference implementations (and keras.applications layer for layer): MBConv (expand 1x1,
depthwise, squeeze-excite, project 1x1) and fused-MBConv (one full convolution in place of expand and
depthwise, EfficientNetV2), identity shortcut when stride 1 and in == out, per-sample drop-connect rising
linearly over the blocks, batch norm epsilon 1e-3, conv kernels VarianceScaling(2, fan_out, truncated normal),
dense kernel VarianceScaling(1/3, fan_out, uniform).

Inputs are float images in [0, 255] (NHWC); the model scales them as its family's pretrained weights expect
(``Architecture.input_scaling``) and returns float32 logits, also under a mixed-precision policy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import keras
from keras import layers

from effnet.models.layers import batch_norm_layer

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
BN_EPSILON = 1e-3


@dataclass(frozen=True)
class BlockStage:
    """One row of a block table: a stage of identical blocks (before scaling)."""

    filters_in: int
    filters_out: int
    kernel: int
    repeats: int
    expand: int
    stride: int
    se_ratio: float = 0.25  # squeeze-excite width as a fraction of the block's input filters; 0 = none
    fused: bool = False  # fused-MBConv (EfficientNetV2's early stages)


@dataclass(frozen=True)
class Variant:
    """Compound-scaling coefficients of one variant: width, depth, native resolution, classifier dropout."""

    width: float
    depth: float
    resolution: int
    dropout: float


@dataclass(frozen=True)
class Architecture:
    """One variant's network: its blocks (scaled, one per block), stem and head widths and defaults."""

    blocks: tuple[BlockStage, ...]
    stem_filters: int
    head_filters: int
    resolution: int
    dropout: float
    bn_momentum: float
    input_scaling: str  # "imagenet": (x/255 - mean) / std; "signed": x/128 - 1 (EfficientNetV2-S/M/L)


def round_filters(filters: int, width: float, divisor: int = 8, min_fraction: float = 0.9) -> int:
    """Scale ``filters`` by ``width`` and round to a multiple of ``divisor``, never below ``min_fraction`` of the
    scaled count (V1's 10% rule; EfficientNetV2 has none: 0)."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < min_fraction * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    """Scale a stage's block count by ``depth``, rounding up."""
    return int(math.ceil(depth * repeats))


def scale_stages(table: tuple[BlockStage, ...], variant: Variant, min_fraction: float = 0.9) -> list[BlockStage]:
    """A table's blocks at a variant's width and depth, one BlockStage per block (later repeats stride 1)."""
    blocks = []
    for stage in table:
        stage = replace(stage, filters_in=round_filters(stage.filters_in, variant.width, min_fraction=min_fraction),
                        filters_out=round_filters(stage.filters_out, variant.width, min_fraction=min_fraction))
        for i in range(round_repeats(stage.repeats, variant.depth)):
            blocks.append(stage if i == 0 else replace(stage, filters_in=stage.filters_out, stride=1))
    return blocks


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


def _project_and_shortcut(x, inputs, stage: BlockStage, opts: BlockOptions, drop_rate: float, name: str,
                          kernel: int = 1, strides: int = 1, activate: bool = False):
    """A block's projection (conv, batch norm, optionally an activation) and its shortcut with drop-connect."""
    x = _conv(stage.filters_out, kernel, opts, f"{name}_project_conv", strides)(x)
    residual = stage.stride == 1 and stage.filters_in == stage.filters_out
    # zero_init_residual: the block starts as the identity (Goyal et al. 2017; timm's zero_init_last).
    x = _bn(opts, f"{name}_project_bn", "zeros" if residual and opts.zero_init_residual else "ones")(x)
    if activate:
        x = layers.Activation(opts.activation, name=f"{name}_project_activation")(x)
    if residual:
        if drop_rate > 0:
            # Drop the whole residual branch per sample (stochastic depth).
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(x)
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def _squeeze_excite_of(x, stage: BlockStage, opts: BlockOptions, name: str):
    if not stage.se_ratio:
        return x
    return squeeze_excite(x, max(1, int(stage.filters_in * stage.se_ratio)), opts, f"{name}_se")


def mbconv(x, stage: BlockStage, opts: BlockOptions, drop_rate: float, name: str):
    """Mobile inverted bottleneck: expand (1x1), depthwise, squeeze-excite, project (1x1), shortcut."""
    inputs = x
    if stage.expand != 1:
        x = conv_bn_act(x, stage.filters_in * stage.expand, 1, opts, f"{name}_expand")
    x = layers.DepthwiseConv2D(stage.kernel, strides=stage.stride, padding="same", use_bias=False,
                               depthwise_initializer=conv_initializer(opts.weight_init), name=f"{name}_dwconv")(x)
    x = _bn(opts, f"{name}_bn")(x)
    x = layers.Activation(opts.activation, name=f"{name}_activation")(x)
    x = _squeeze_excite_of(x, stage, opts, name)
    return _project_and_shortcut(x, inputs, stage, opts, drop_rate, name)


def fused_mbconv(x, stage: BlockStage, opts: BlockOptions, drop_rate: float, name: str):
    """Fused-MBConv (EfficientNetV2): one kxk convolution expands (or, at expand 1, is the whole block), then
    squeeze-excite where the table has it, a 1x1 projection and the shortcut."""
    inputs = x
    if stage.expand == 1:
        x = _squeeze_excite_of(x, stage, opts, name)
        return _project_and_shortcut(x, inputs, stage, opts, drop_rate, name, kernel=stage.kernel,
                                     strides=stage.stride, activate=True)
    x = conv_bn_act(x, stage.filters_in * stage.expand, stage.kernel, opts, f"{name}_expand", strides=stage.stride)
    x = _squeeze_excite_of(x, stage, opts, name)
    return _project_and_shortcut(x, inputs, stage, opts, drop_rate, name)


def _scale_inputs(inputs, scaling: str):
    if scaling == "imagenet":
        return layers.Normalization(mean=IMAGENET_MEAN, variance=[s * s for s in IMAGENET_STD],
                                    name="normalize")(inputs)
    if scaling == "signed":
        return layers.Rescaling(1 / 128, offset=-1, name="normalize")(inputs)
    raise ValueError(f"unknown input scaling {scaling!r}")


def build(arch: Architecture, *, name: str, num_classes: int = 1000, image_size: int | None = None,
          include_top: bool = True, pooling: str | None = None, dropout: float | None = None,
          drop_connect: float = 0.2, activation: str = "swish", batch_norm: str = "plain",
          weight_init: str = "fan_out", bn_momentum: float | None = None,
          zero_init_residual: bool = False, any_size: bool = False) -> keras.Model:
    """Build ``arch`` as a Keras model named ``name``.

    ``image_size=None`` uses the variant's native resolution; ``dropout=None`` its dropout; ``bn_momentum=None``
    its family's (0.99 for V1, 0.9 for V2). ``include_top=False`` returns the final feature map (or its
    ``pooling`` "avg"/"max"). ``batch_norm`` is "plain" or "sync" (Horovod cross-rank statistics);
    ``weight_init`` is the VarianceScaling mode, "fan_out" (reference) or "fan_in". ``bn_momentum`` sets how
    fast the batch-norm statistics move: a short run needs a smaller one, as the moving variance keeps
    ``bn_momentum ** steps`` of its initial 1.0. ``zero_init_residual`` starts each residual block's last
    batch-norm scale at 0 (not the reference; trains faster from scratch in short runs). ``any_size`` takes
    images of any height and width (stage-wise training changes the size between stages).
    """
    size = image_size or arch.resolution
    momentum = arch.bn_momentum if bn_momentum is None else bn_momentum
    opts = BlockOptions(activation, batch_norm, weight_init, momentum, zero_init_residual)
    inputs = keras.Input((None, None, 3) if any_size else (size, size, 3), name="images")
    x = _scale_inputs(inputs, arch.input_scaling)
    x = conv_bn_act(x, arch.stem_filters, 3, opts, "stem", strides=2)
    for i, block in enumerate(arch.blocks):
        make = fused_mbconv if block.fused else mbconv
        x = make(x, block, opts, drop_connect * i / len(arch.blocks), f"block{i + 1:02d}")
    x = conv_bn_act(x, arch.head_filters, 1, opts, "head")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        rate = arch.dropout if dropout is None else dropout
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
