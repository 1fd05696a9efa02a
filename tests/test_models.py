"""EfficientNet B0-B7 and EfficientNetV2: the published architectures, options, precision, save/reload."""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import HANG_GUARD

from effnet.models import available, build_model, native_size
from effnet.models import efficientnet_v2
from effnet.models.efficientnet import round_filters, scaled_stages, TEST_VARIANTS, VARIANTS

PUBLISHED_MILLIONS = {"b0": 5.3, "b1": 7.8, "b2": 9.2, "b3": 12, "b4": 19, "b5": 30, "b6": 43, "b7": 66}
# keras.applications.EfficientNetB0-B7 (Keras 3.15.1, 1000 classes, count_params): the architecture ours equals
# layer for layer, counted once rather than built in every run (35 s of the suite's CPU)
KERAS_APPLICATIONS = {"b0": 5330564, "b1": 7856232, "b2": 9177562, "b3": 12320528, "b4": 19466816, "b5": 30562520,
                      "b6": 43265136, "b7": 66658680}


def count_params(model):
    """Parameters, not counting the input-normalisation layer (keras.applications' has 7 adapt weights)."""
    return sum(int(np.prod(w.shape)) for layer in model.layers if not isinstance(layer, keras.layers.Normalization)
               for w in layer.weights)


# keras.applications.EfficientNetV2* (Keras 3.15.1, 1000 classes, count_params less the Normalization layer's)
KERAS_APPLICATIONS_V2 = {"b0": 7200312, "b1": 8212124, "b2": 10178374, "b3": 14467622, "s": 21612360,
                         "m": 54431388, "l": 119027848}
V2_NAMES = [f"efficientnetv2-{v}" for v in KERAS_APPLICATIONS_V2]


def test_registry_lists_both_families_with_native_sizes_and_the_test_size():
    assert available() == sorted([f"efficientnet-b{i}" for i in range(8)] + ["efficientnet-test"] + V2_NAMES)
    assert [native_size(n) for n in available()] == [224, 240, 260, 300, 380, 456, 528, 600, 32,
                                                     224, 240, 260, 300, 480, 480, 384]  # V2: b0-b3, l, m, s
    with pytest.raises(ValueError, match="unknown model 'efficientnet-b9'; available: efficientnet-b0"):
        build_model("efficientnet-b9")


@pytest.mark.parametrize("index", range(8))
def test_parameters_and_outputs_match_the_published_architecture(index):
    name = f"efficientnet-b{index}"
    model = build_model(name, image_size=64)
    assert count_params(model) == KERAS_APPLICATIONS[f"b{index}"]
    assert count_params(model) / 1e6 == pytest.approx(PUBLISHED_MILLIONS[f"b{index}"], rel=0.03)
    logits = model(np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32"))
    assert logits.shape == (2, 1000) and logits.dtype == "float32"
    assert model.layers[-1].activation is keras.activations.linear  # logits, no softmax


@pytest.mark.parametrize("name", V2_NAMES)
def test_v2_parameters_equal_keras_applications(name):
    model = build_model(name, image_size=64)
    assert count_params(model) == KERAS_APPLICATIONS_V2[name.split("-")[1]]
    logits = model(np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32"))
    assert logits.shape == (1, 1000) and logits.dtype == "float32"


def test_v2_blocks_fused_early_squeeze_excite_late_and_its_input_scaling():
    s = build_model("efficientnetv2-s", num_classes=10)
    assert s.input_shape == (None, 384, 384, 3)
    blocks = efficientnet_v2.scaled_stages("efficientnetv2-s")
    assert len(blocks) == 40 and [b.fused for b in blocks].count(True) == 10
    names = {layer.name for layer in s.layers}
    # fused stages: no depthwise conv and no squeeze-excite; at expand 1 the kxk projection is the block
    assert "block01_dwconv" not in names and "block01_se_reduce" not in names and "block01_expand_conv" not in names
    assert s.get_layer("block01_project_conv").kernel_size == (3, 3) and "block01_project_activation" in names
    expand = s.get_layer("block03_expand_conv")
    assert (expand.kernel_size, expand.strides) == ((3, 3), (2, 2))
    assert s.get_layer("block03_project_conv").kernel_size == (1, 1)
    # MBConv stages: squeeze-excite on a quarter of the block's input filters
    assert s.get_layer("block11_se_reduce").filters == 16 and s.get_layer("block11_dwconv").strides == (2, 2)
    assert (s.get_layer("stem_conv").filters, s.get_layer("head_conv").filters) == (24, 1280)
    assert s.get_layer("stem_bn").momentum == 0.9 and s.get_layer("top_dropout").rate == 0.2
    scaled = keras.Model(s.input, s.get_layer("normalize").output)(np.full((1, 384, 384, 3), 255.0, "float32"))
    assert np.allclose(scaled, 255 / 128 - 1)  # S, M, L: x/128 - 1, as keras' pretrained V2-S expects
    b0 = build_model("efficientnetv2-b0", num_classes=10, image_size=32)
    assert isinstance(b0.get_layer("normalize"), keras.layers.Normalization)  # B0-B3: ImageNet's mean/std
    # V2 rounds filters without V1's 10% rule: B3's 16-filter stage is 16, not 24
    assert efficientnet_v2.scaled_stages("efficientnetv2-b3")[0].filters_out == 16
    assert round_filters(16, 1.2) == 24


def test_b0_native_size_and_block_table():
    model = build_model("efficientnet-b0", num_classes=10)
    assert model.input_shape == (None, 224, 224, 3) and model.output_shape == (None, 10)
    blocks = scaled_stages(VARIANTS["efficientnet-b0"])
    assert len(blocks) == 16
    assert [(b.filters_in, b.filters_out, b.kernel, b.expand, b.stride) for b in blocks[:4]] == [
        (32, 16, 3, 1, 1), (16, 24, 3, 6, 2), (24, 24, 3, 6, 1), (24, 40, 5, 6, 2)]
    # Squeeze-excite width is a quarter of the block's input filters, not of the expanded ones.
    assert model.get_layer("block03_se_reduce").filters == 6
    # Drop-connect rises linearly from 0 to 0.2 over the blocks; shortcuts only where stride 1 and in == out.
    drops = {layer.name: layer.rate for layer in model.layers if layer.name.endswith("_drop")}
    assert drops["block03_drop"] == pytest.approx(0.2 * 2 / 16)
    assert drops["block15_drop"] == pytest.approx(0.2 * 14 / 16)
    assert "block02_add" not in [layer.name for layer in model.layers]
    bn = model.get_layer("stem_bn")
    assert (bn.momentum, bn.epsilon) == (0.99, 1e-3)
    assert model.get_layer("top_dropout").rate == 0.2


def test_the_test_variant_keeps_every_kind_of_block():
    """The suite's mechanism tests run efficientnet-test: it must hold what they would otherwise miss."""
    blocks = scaled_stages(TEST_VARIANTS["efficientnet-test"])
    assert len(blocks) == 8 and {(b.expand, b.kernel) for b in blocks} == {(1, 3), (6, 3), (6, 5)}
    model = build_model("efficientnet-test", num_classes=10, drop_connect=0.2)
    names = [layer.name for layer in model.layers]
    assert "block07_add" in names and model.get_layer("block07_drop").rate == pytest.approx(0.2 * 6 / 8)
    assert model.get_layer("block05_se_reduce").filters == 6 and model.input_shape == (None, 32, 32, 3)


def test_round_filters():
    assert round_filters(32, 1.0) == 32
    assert round_filters(32, 1.1) == 32
    assert round_filters(1280, 1.4) == 1792
    assert round_filters(32, 1.8) == 56 and round_filters(32, 2.0) == 64
    assert round_filters(16, 1.1) == 16 and round_filters(24, 1.1) == 24
    assert round_filters(8, 0.5) == 8  # never below the divisor


def test_input_is_normalised_in_the_graph():
    model = build_model("efficientnet-b0", image_size=32)
    mean_image = np.broadcast_to(np.array([0.485, 0.456, 0.406]) * 255, (1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model.get_layer("normalize")(mean_image), 0, atol=1e-5)
    one_std = mean_image + np.array([0.229, 0.224, 0.225], "float32") * 255
    np.testing.assert_allclose(model.get_layer("normalize")(one_std), 1, atol=1e-5)


def test_initialisers_follow_the_reference_and_fan_in_is_selectable():
    out = build_model("efficientnet-b0", image_size=32)
    fan_in = build_model("efficientnet-b0", image_size=32, weight_init="fan_in")
    # The head convolution is 1x1, 320 -> 1280: fan_out 1280, fan_in 320.
    assert out.get_layer("head_conv").kernel.numpy().std() == pytest.approx(np.sqrt(2 / 1280), rel=0.05)
    assert fan_in.get_layer("head_conv").kernel.numpy().std() == pytest.approx(np.sqrt(2 / 320), rel=0.05)
    dense = out.get_layer("logits").kernel.numpy()  # uniform, limit sqrt(3 * (1/3) / fan_out)
    assert np.abs(dense).max() <= np.sqrt(1 / 1000) and dense.std() == pytest.approx(np.sqrt(1 / 3000), rel=0.05)


def test_zero_init_residual_starts_exactly_the_residual_blocks_as_the_identity():
    plain = build_model("efficientnet-b0", image_size=32)
    zero = build_model("efficientnet-b0", image_size=32, zero_init_residual=True)
    residual = {layer.name.removesuffix("_add") for layer in zero.layers if layer.name.endswith("_add")}
    assert len(residual) == 9  # 16 blocks, the first of each of the 7 stages changes shape
    for layer in zero.layers:
        if layer.name.endswith("_project_bn"):
            block = layer.name.removesuffix("_project_bn")
            assert np.all(layer.gamma.numpy() == (0.0 if block in residual else 1.0)), layer.name
            assert np.all(plain.get_layer(layer.name).gamma.numpy() == 1.0)
    blocks = keras.Model(zero.inputs, [zero.get_layer(name).output for name in ("block03_add", "block02_project_bn")])
    out, block_input = blocks(np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32"))
    np.testing.assert_array_equal(out.numpy(), block_input.numpy())  # block03 passes block02's output through


def test_overrides_and_feature_extractor():
    model = build_model("efficientnet-b1", image_size=64, num_classes=5, dropout=0.5, drop_connect=0.0,
                        activation="relu", bn_momentum=0.9)
    assert model.get_layer("top_dropout").rate == 0.5
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and {layer.momentum for layer in norms} == {0.9}
    assert {layer.momentum for layer in build_model("efficientnet-b0", image_size=32).layers
            if isinstance(layer, keras.layers.BatchNormalization)} == {0.99}  # the reference's
    assert not [layer for layer in model.layers if layer.name.endswith("_drop")]
    assert model.get_layer("stem_activation").activation is keras.activations.relu
    features = build_model("efficientnet-b0", image_size=64, include_top=False)
    assert features.output_shape == (None, 2, 2, 1280)
    pooled = build_model("efficientnet-b0", image_size=64, include_top=False, pooling="avg")
    assert pooled.output_shape == (None, 1280)


def test_a_model_of_any_size_has_the_same_weights_and_takes_every_stage_size():
    """Stage-wise training's model: one set of weights trains at each stage's size."""
    fixed = build_model("efficientnetv2-b0", image_size=48, num_classes=3)
    flexible = build_model("efficientnetv2-b0", image_size=48, num_classes=3, any_size=True)
    assert flexible.input_shape == (None, None, None, 3)
    assert [tuple(w.shape) for w in flexible.weights] == [tuple(w.shape) for w in fixed.weights]
    flexible.set_weights(fixed.get_weights())
    images = np.random.default_rng(0).uniform(0, 255, (2, 48, 48, 3)).astype("float32")
    np.testing.assert_allclose(flexible(images).numpy(), fixed(images).numpy(), atol=1e-5)
    for size in (32, 40):
        assert flexible(images[:, :size, :size]).shape == (2, 3)


def test_mixed_float16_computes_in_half_and_returns_float32_logits():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model("efficientnet-b0", image_size=64)
        assert model.get_layer("block05_dwconv").compute_dtype == "float16"
        assert model.get_layer("block05_dwconv").variable_dtype == "float32"
        assert model.get_layer("logits").compute_dtype == "float32"
        logits = model(np.zeros((1, 64, 64, 3), "float32"))
        assert logits.dtype == "float32"
        inner = keras.Model(model.input, model.get_layer("block05_add").output)
        assert inner(np.zeros((1, 64, 64, 3), "float32")).dtype == "float16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("batch_norm", ["plain", "sync"])
def test_save_and_reload_gives_identical_outputs(tmp_path, batch_norm):
    model = build_model("efficientnet-b0", image_size=64, num_classes=7, batch_norm=batch_norm)
    x = np.random.default_rng(1).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    model(x, training=True)  # move the batch-norm statistics off their initial values
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(model.predict_on_batch(x), reloaded.predict_on_batch(x))


SYNC_BN_SCRIPT = """
import horovod.tensorflow as hvd
import numpy as np
from effnet.models.layers import SyncBatchNormalization

hvd.init()
rng = np.random.default_rng(0)
full = rng.normal(3.0, 2.0, (8, 4, 4, 5)).astype("float32") * np.arange(1, 6, dtype="float32")
mine = full[hvd.rank() * 4:(hvd.rank() + 1) * 4]
bn = SyncBatchNormalization(momentum=0.0)
out = bn(mine, training=True)
expected = (mine - full.mean((0, 1, 2))) / np.sqrt(full.var((0, 1, 2)) + bn.epsilon)
np.testing.assert_allclose(out.numpy(), expected, atol=1e-4)
np.testing.assert_allclose(bn.moving_mean.numpy(), full.mean((0, 1, 2)), rtol=1e-5)
print("SYNCBN-OK", hvd.rank(), flush=True)
"""


def test_sync_batch_norm_uses_global_batch_statistics_across_two_ranks(tmp_path):
    script = tmp_path / "syncbn.py"
    script.write_text(SYNC_BN_SCRIPT)
    horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    proc = subprocess.run([horovodrun, "--gloo", "-np", "2", "-H", "localhost:2", sys.executable, str(script)],
                          capture_output=True, text=True, timeout=HANG_GUARD,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("SYNCBN-OK") == 2
