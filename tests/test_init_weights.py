"""train.init_from: keras.applications EfficientNet files (legacy .h5 and .weights.h5) and our own runs."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from effnet.core.errors import UserError
from effnet.models import build_model
from effnet.models.efficientnet import IMAGENET_MEAN, IMAGENET_STD
from effnet.stages.train import init_weights

SIZE = 64


def keras_file(tmp_path, arch: str, suffix: str, classes: int = 1000, top: bool = True):
    """A keras.applications model of ``arch`` with random weights and its pretrained files' input scaling, saved."""
    builder = getattr(keras.applications, init_weights.keras_counterpart(arch)[0])
    reference = builder(weights=None, include_top=top, classes=classes, classifier_activation=None,
                        input_shape=(SIZE, SIZE, 3))
    norm = next((layer for layer in reference.layers if isinstance(layer, keras.layers.Normalization)), None)
    if norm and norm.weights:  # V1's adapted normalisation as ImageNet's files hold it (V2's: constants, or none)
        norm.set_weights([np.array(IMAGENET_MEAN) / 255, (np.array(IMAGENET_STD) / 255) ** 2, np.array(0)])
        norm.finalize_state()  # as after adapt(): the layer normalises with these from now on
    path = tmp_path / f"{arch}{suffix}"
    if suffix == ".weights.h5":
        reference.save_weights(path)
    else:
        reference.save(path)
    return reference, path


@pytest.mark.parametrize("arch, suffix", [("efficientnet-b0", ".h5"), ("efficientnet-b0", ".weights.h5"),
                                          ("efficientnet-b2", ".weights.h5"), ("efficientnetv2-b0", ".h5"),
                                          ("efficientnetv2-b0", ".weights.h5"), ("efficientnetv2-s", ".h5"),
                                          ("efficientnetv2-s", ".weights.h5")])
def test_a_keras_applications_file_gives_its_logits(tmp_path, arch, suffix):
    reference, path = keras_file(tmp_path, arch, suffix)
    ours = build_model(arch, num_classes=1000, image_size=SIZE)
    report = init_weights.load(ours, arch, path)
    assert report.reinitialised == () and report.note == ""
    images = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    theirs, mine = reference.predict_on_batch(images), ours.predict_on_batch(images)
    assert np.max(np.abs(mine - theirs)) / np.max(np.abs(theirs)) < 1e-5


def test_a_model_of_any_size_for_stage_wise_training_loads_the_file_as_well(tmp_path):
    reference, path = keras_file(tmp_path, "efficientnetv2-b0", ".weights.h5")
    ours = build_model("efficientnetv2-b0", num_classes=1000, image_size=SIZE, any_size=True)
    assert init_weights.load(ours, "efficientnetv2-b0", path).reinitialised == ()
    images = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    theirs, mine = reference.predict_on_batch(images), ours.predict_on_batch(images)
    assert np.max(np.abs(mine - theirs)) / np.max(np.abs(theirs)) < 1e-5


def test_with_another_class_count_only_the_head_is_new(tmp_path):
    reference, path = keras_file(tmp_path, "efficientnet-b0", ".weights.h5")
    ours = build_model("efficientnet-b0", num_classes=10, image_size=SIZE)
    head_before = [w.copy() for w in ours.get_layer("logits").get_weights()]
    report = init_weights.load(ours, "efficientnet-b0", path)
    assert report.reinitialised == ("logits",)
    assert report.loaded == sum(1 for layer in ours.layers if layer.weights) - 1
    def backbone(model, skip):  # float variables (not the dropout layers' seeds), ours and theirs named apart
        return sorted(np.asarray(v).tobytes() for v in model.variables
                      if v.dtype == "float32" and not v.path.startswith(skip))

    ref_values = backbone(reference, ("predictions", "normalization"))  # our normalisation is fixed
    our_values = backbone(ours, "logits")
    assert ref_values == our_values  # every backbone variable equals the file's
    assert all(np.array_equal(a, b) for a, b in zip(head_before, ours.get_layer("logits").get_weights()))


@pytest.mark.parametrize("arch, suffix", [("efficientnet-b0", ".h5"), ("efficientnetv2-s", ".weights.h5")])
def test_a_notop_file_leaves_the_head_new(tmp_path, arch, suffix):
    reference, path = keras_file(tmp_path, arch, suffix, top=False)
    ours = build_model(arch, num_classes=5, image_size=SIZE)
    assert init_weights.load(ours, arch, path).reinitialised == ("logits",)
    features = keras.Model(ours.input, ours.get_layer("head_activation").output)
    images = np.random.default_rng(1).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    theirs, mine = reference.predict_on_batch(images), features.predict_on_batch(images)
    assert np.max(np.abs(mine - theirs)) / np.max(np.abs(theirs)) < 1e-5


def test_a_run_of_other_classes_gives_its_backbone_and_no_classifier(tmp_path):
    """One of our runs: the same class count of other class names re-initialises the classifier alone."""
    import json

    source = build_model("efficientnet-test", num_classes=3, image_size=SIZE)
    source.save(tmp_path / "ema.keras")
    (tmp_path / "train_summary.json").write_text(json.dumps({"classes": ["cat", "dog", "owl"]}))
    for classes, fresh in ((["cat", "dog", "owl"], ()), (["ant", "bee", "fly"], ("logits",))):
        ours = build_model("efficientnet-test", num_classes=3, image_size=SIZE)
        report = init_weights.load(ours, "efficientnet-test", tmp_path, classes)
        assert (report.kind, report.reinitialised) == ("run", fresh)
        kernel = [model.get_layer("logits").get_weights()[0] for model in (source, ours)]
        assert np.array_equal(*kernel) == (not fresh)
        assert np.array_equal(*(model.get_layer("stem_conv").get_weights()[0] for model in (source, ours)))


def test_another_arch_or_a_file_of_neither_kind_is_named(tmp_path):
    _, path = keras_file(tmp_path, "efficientnet-b0", ".weights.h5")
    ours = build_model("efficientnet-b2", num_classes=1000, image_size=SIZE)
    with pytest.raises(UserError, match=f"{path}.*efficientnet-b2"):
        init_weights.load(ours, "efficientnet-b2", path)
    other = tmp_path / "weights.txt"
    other.write_text("not weights")
    with pytest.raises(UserError, match="weights.txt: neither"):
        init_weights.load(ours, "efficientnet-b2", other)
    with pytest.raises(UserError, match="missing.h5: no such file"):
        init_weights.load(ours, "efficientnet-b2", tmp_path / "missing.h5")


def test_a_file_with_other_input_statistics_is_loaded_with_a_note(tmp_path):
    path = tmp_path / "plain.weights.h5"
    keras.applications.EfficientNetB0(weights=None, input_shape=(SIZE, SIZE, 3)).save_weights(path)
    ours = build_model("efficientnet-b0", num_classes=1000, image_size=SIZE)
    assert "input normalisation" in init_weights.load(ours, "efficientnet-b0", path).note
