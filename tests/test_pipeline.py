"""Input pipelines: both backends, rank sharding, exact evaluation, augmentations, clear errors."""
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import run_cli
from datasets import copy_files, make_folders, read_split
from effnet.data import autoaugment, build_dataset
from effnet.data.mixing import mix_batch
from effnet.data.sharding import plan
from effnet.data.tfrecord import encode_record
from effnet.errors import UserError

BACKENDS = ["tfdata", "dali"]


def prepare_and_index(src: Path, out: Path, train_shards=3, val_shards=2) -> tuple[Path, Path]:
    run_cli("prepare", "--source", "folders", "--input", str(src), "--output", str(out / "rec"),
            "--train-shards", str(train_shards), "--val-shards", str(val_shards), "--workers", "2", check=True)
    run_cli("index", "--tfrecords", str(out / "rec"), "--output", str(out / "idx"), check=True)
    return out / "rec", out / "idx"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """60 training examples (labels 0-3 in uneven numbers) and 37 validation examples."""
    root = tmp_path_factory.mktemp("pipeline")
    make_folders(root / "src", train={"a": 20, "b": 10, "c": 18, "d": 12}, val={"a": 11, "b": 9, "c": 10, "d": 7})
    return prepare_and_index(root / "src", root)


def collect(batches, real_only=True):
    labels, images = [], []
    for x, y in batches:
        labels += y.numpy().tolist()
        images.append(x.numpy())
    images = np.concatenate(images)
    if real_only:
        keep = np.array(labels) >= 0
        return [y for y in labels if y >= 0], images[keep]
    return labels, images


@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_labels_equal_what_was_written_in_order(data, backend):
    rec, idx = data
    written = [e["label"] - 1 for e in read_split(rec, "validation")]
    batches = build_dataset(rec, "validation", backend=backend, batch_size=8, image_size=32, index_dir=idx)
    labels, images = collect(batches)
    assert labels == written
    assert images.dtype == np.float32 and images.shape[1:] == (32, 32, 3)
    assert 0 <= images.min() and images.max() <= 255 and images.max() > 1  # [0, 255], not [0, 1]


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_sees_every_example_exactly_once_across_ranks(data, backend, world):
    rec, idx = data
    written = [e["label"] - 1 for e in read_split(rec, "validation")]
    per_rank = [build_dataset(rec, "validation", backend=backend, batch_size=8, image_size=32, index_dir=idx,
                              rank=r, world_size=world) for r in range(world)]
    assert len({b.steps for b in per_rank}) == 1  # every rank runs the same number of batches
    combined = []
    for b in per_rank:
        labels, _ = collect(b, real_only=False)
        assert len(labels) == b.steps * 8
        counts = [sum(1 for y in labels[i * 8:(i + 1) * 8] if y >= 0) for i in range(b.steps)]
        assert counts == b.real_counts
        n_real = sum(counts)
        assert all(y >= 0 for y in labels[:n_real]) and all(y == -1 for y in labels[n_real:])
        combined += labels[:n_real]
    assert combined == written  # contiguous, disjoint, complete


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_ranks_are_disjoint_and_cover_the_data(data, backend):
    rec, idx = data
    written = Counter(e["label"] - 1 for e in read_split(rec, "train"))
    ranks = [build_dataset(rec, "train", backend=backend, batch_size=10, image_size=32, index_dir=idx,
                           rank=r, world_size=2, seed=5) for r in range(2)]
    assert [b.steps for b in ranks] == [3, 3]
    total = Counter()
    for b in ranks:
        total += Counter(collect(b)[0])
    assert total == written  # 60 = 2 ranks x 3 batches x 10: every example once


def test_rank_plans_partition_the_records(data):
    rec, _ = data
    for epoch in range(3):
        plans = [plan(rec, "train", training=True, batch_size=4, rank=r, world_size=4, seed=1, epoch=epoch)
                 for r in range(4)]
        seen = [(s.path, i) for p in plans for s in p.spans for i in range(s.start, s.stop)]
        assert len(seen) == len(set(seen)) == 60
    orders = {tuple(s.path for s in plan(rec, "train", training=True, batch_size=4, seed=1, epoch=e).files)
              for e in range(6)}
    assert len(orders) > 1  # the file order changes between epochs


def test_training_order_is_a_function_of_seed_and_epoch(data):
    rec, idx = data
    def run(seed, epoch):
        b = build_dataset(rec, "train", batch_size=10, image_size=32, seed=seed, epoch=epoch)
        labels, images = collect(b)
        return labels, images
    first, again, other_epoch = run(1, 0), run(1, 0), run(1, 1)
    assert first[0] == again[0] and np.array_equal(first[1], again[1])  # a resumed run sees the same data
    assert first[0] != other_epoch[0]
    assert Counter(first[0]) == Counter(other_epoch[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_flip_is_random(tmp_path, backend):
    src = tmp_path / "src"
    ramp = np.broadcast_to(np.linspace(0, 255, 96)[None, :, None], (64, 96, 3)).astype(np.uint8)
    for split, n in (("train", 60), ("val", 2)):
        (src / split / "ramp").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(ramp).save(src / split / "ramp" / f"{i}.jpg", quality=95)
    rec, idx = prepare_and_index(src, tmp_path, train_shards=2, val_shards=1)
    _, images = collect(build_dataset(rec, "train", backend=backend, batch_size=20, image_size=32, index_dir=idx))
    flipped = images[:, :, :8].mean(axis=(1, 2, 3)) > images[:, :, -8:].mean(axis=(1, 2, 3))
    assert 0.25 < flipped.mean() < 0.75, flipped.mean()  # about half, not all and not none


@pytest.mark.parametrize("augment", ["autoaugment", "randaugment"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_augmentations_keep_dtype_shape_range_and_change_images(data, backend, augment):
    rec, idx = data
    kwargs = dict(backend=backend, batch_size=20, image_size=32, index_dir=idx, seed=3)
    plain = build_dataset(rec, "train", **kwargs)
    augmented = build_dataset(rec, "train", augment=augment, **kwargs)
    labels_a, images_a = collect(augmented)
    assert images_a.dtype == np.float32 and images_a.shape == (60, 32, 32, 3)
    assert images_a.min() >= 0 and images_a.max() <= 255
    assert Counter(labels_a) == Counter(collect(plain)[0])
    if backend == "tfdata":  # same crops and flips: only the augmentation differs
        _, images_p = collect(plain)
        changed = np.abs(images_a - images_p).mean(axis=(1, 2, 3)) > 1
        assert changed.mean() > 0.3


@pytest.mark.parametrize("name", autoaugment.RANDAUGMENT_OPS)
def test_each_op_keeps_uint8_shape(name):
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8))
    for level in (0, 5, 10):
        out = autoaugment.apply_op(name, image, level, tf.constant([1, 2]), autoaugment.AUTOAUGMENT_CONSTANTS)
        assert out.dtype == tf.uint8 and out.shape == image.shape


def test_equalize_and_autocontrast_match_pil():
    from PIL import ImageOps
    pixels = np.random.default_rng(1).integers(30, 200, (40, 50, 3), dtype=np.uint8)
    pil = Image.fromarray(pixels)
    np.testing.assert_array_equal(autoaugment.equalize(tf.constant(pixels)).numpy(), np.asarray(ImageOps.equalize(pil)))
    stretched = autoaugment.autocontrast(tf.constant(pixels)).numpy().astype(int)
    assert np.abs(stretched - np.asarray(ImageOps.autocontrast(pil))).max() <= 1  # float rounding only
    assert (stretched.min(axis=(0, 1)) == 0).all() and (stretched.max(axis=(0, 1)) == 255).all()
    inverted = autoaugment.solarize(tf.constant(pixels), 128).numpy()
    np.testing.assert_array_equal(inverted, np.where(pixels < 128, pixels, 255 - pixels))


def test_mixup_and_cutmix_make_consistent_soft_labels():
    images = tf.stack([tf.fill([8, 8, 3], float(v)) for v in (0, 100, 200, 255)])
    labels = tf.constant([0, 1, 2, 3])
    same, onehot = mix_batch(images, labels, 4, tf.constant([0, 0]))
    assert np.array_equal(same, images) and np.array_equal(onehot, np.eye(4))
    for mixup_alpha, cutmix_alpha in ((0.2, 0.0), (0.0, 1.0), (0.2, 1.0)):
        for s in range(5):
            mixed, soft = mix_batch(images, labels, 4, tf.constant([s, 1]), mixup_alpha, cutmix_alpha)
            soft = soft.numpy()
            np.testing.assert_allclose(soft.sum(axis=1), 1, rtol=1e-6)
            # The image is the same mixture of the two partners as its label.
            partner = 3 - np.arange(4)
            weight = soft[np.arange(4), np.arange(4)]
            expected_mean = weight * images.numpy().mean(axis=(1, 2, 3)) + (1 - weight) * images.numpy().mean(
                axis=(1, 2, 3))[partner]
            np.testing.assert_allclose(mixed.numpy().mean(axis=(1, 2, 3)), expected_mean, rtol=1e-4, atol=1e-3)


def test_missing_index_is_a_clear_error(data, tmp_path):
    rec, idx = data
    with pytest.raises(UserError, match=r"train-0000\d-of-00003\.idx: DALI index missing for .*rec/train-0000\d"):
        build_dataset(rec, "train", backend="dali", batch_size=10, image_size=32, index_dir=tmp_path)


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_shard_is_a_clear_error(data, tmp_path, backend):
    rec, idx = data
    copy = copy_files(rec, tmp_path / "rec")
    shard = copy / "validation-00001-of-00002"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(UserError, match=r"validation-00001-of-00002: \d+ bytes but .*manifest.json records"):
        build_dataset(copy, "validation", backend=backend, batch_size=8, image_size=32, index_dir=idx)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_image_record_is_an_error_naming_the_shard(data, tmp_path, backend):
    from tensorflow.core.example import example_pb2, feature_pb2
    rec, _ = data
    copy = copy_files(rec, tmp_path / "rec")
    bad = example_pb2.Example(features=feature_pb2.Features(feature={
        "image/encoded": feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[b"this is not an image"])),
        "image/class/label": feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[1]))}))
    shard = copy / "validation-00000-of-00002"
    with open(shard, "ab") as f:
        f.write(encode_record(bad.SerializeToString()))
    manifest = json.loads((copy / "manifest.json").read_text())
    entry = manifest["splits"]["validation"]["shards"][0]
    entry["examples"] += 1
    entry["bytes"] = shard.stat().st_size
    (copy / "manifest.json").write_text(json.dumps(manifest))
    run_cli("index", "--tfrecords", str(copy), "--output", str(tmp_path / "idx"), check=True)
    last = sum(1 for _ in open(tmp_path / "idx" / "validation-00000-of-00002.idx")) - 1
    with pytest.raises(UserError, match=rf"validation-00000-of-00002 \(record {last} at byte offset \d+\): "
                                        "corrupt or unreadable image"):
        collect(build_dataset(copy, "validation", backend=backend, batch_size=8, image_size=32,
                              index_dir=tmp_path / "idx"))
