"""Input pipelines: both backends, rank sharding, exact evaluation, augmentations, clear errors."""
import hashlib
import json
import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import run_cli
from datasets import copy_files, make_folders, read_split
from effnet.core.errors import UserError
from effnet.data import autoaugment, build_dataset, dali, tfdata
from effnet.data.mixing import mix_batch
from effnet.data.pipeline import default_index_dir, diagnose
from effnet.data.sharding import plan, plan_epochs
from effnet.formats.record_index import read_index
from effnet.formats.tfrecord import encode_record
from effnet.stages.index import build_indexes

BACKENDS = ["tfdata", "dali"]


def prepare_records(src: Path, out: Path, train_shards=3, val_shards=2) -> Path:
    """Shards in ``out/rec``, their DALI indexes where a pipeline run keeps them (``out/dali-index``)."""
    run_cli("prepare", "--source", "folders", "--input", str(src), "--output", str(out / "rec"),
            "--train-shards", str(train_shards), "--val-shards", str(val_shards), "--workers", "2", check=True)
    build_indexes(out / "rec", default_index_dir(out / "rec"))
    return out / "rec"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """60 training examples (labels 0-3 in uneven numbers) and 37 validation examples."""
    root = tmp_path_factory.mktemp("pipeline")
    make_folders(root / "src", train={"a": 20, "b": 10, "c": 18, "d": 12}, val={"a": 11, "b": 9, "c": 10, "d": 7})
    return prepare_records(root / "src", root)


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
    rec = data
    written = [e["label"] - 1 for e in read_split(rec, "validation")]
    batches = build_dataset(rec, "validation", backend=backend, batch_size=8, image_size=32)
    labels, images = collect(batches)
    assert labels == written
    assert images.dtype == np.float32 and images.shape[1:] == (32, 32, 3)
    assert 0 <= images.min() and images.max() <= 255 and images.max() > 1  # [0, 255], not [0, 1]


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_sees_every_example_exactly_once_across_ranks(data, backend, world):
    rec = data
    written = [e["label"] - 1 for e in read_split(rec, "validation")]
    per_rank = [build_dataset(rec, "validation", backend=backend, batch_size=8, image_size=32,
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


def digest(encoded) -> str:
    return hashlib.sha256(encoded.numpy()).hexdigest()


def test_training_ranks_are_disjoint_and_cover_the_data(data):
    """By example identity: the record stream that both backends decode."""
    rec = data
    written = sorted(hashlib.sha256(e["encoded"]).hexdigest() for e in read_split(rec, "train"))
    assert len(set(written)) == 60
    for world in (2, 3):
        for epoch in (0, 1):
            seen = []
            for rank in range(world):
                plans = plan_epochs(rec, "train", training=True, batch_size=10, epochs=range(epoch, epoch + 1),
                                    rank=rank, world_size=world, seed=5)
                seen += [digest(e) for e, _, _ in tfdata.train_examples(plans, batch_size=10, seed=5,
                                                                         first_epoch=epoch, rank=rank)]
            assert sorted(seen) == written  # 60 = every example once (20 or 30 per rank: full batches)


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_batches_carry_the_labels_of_their_records(data, backend):
    rec = data
    written = Counter(e["label"] - 1 for e in read_split(rec, "train"))
    ranks = [build_dataset(rec, "train", backend=backend, batch_size=10, image_size=32, rank=r, world_size=2,
                           seed=5) for r in range(2)]
    assert [len(b) for b in ranks] == [3, 3]
    assert Counter(collect(ranks[0])[0]) + Counter(collect(ranks[1])[0]) == written


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_stream_spans_epochs_and_resumes_inside_one(data, backend):
    """epochs=3 from epoch 1 is epoch 1, 2, 3 built alone; skip=k leaves out exactly k batches."""
    rec = data
    kwargs = dict(backend=backend, batch_size=10, image_size=32, seed=4)
    stream = build_dataset(rec, "train", epoch=1, epochs=3, **kwargs)
    assert (len(stream), stream.steps, stream.epochs) == (18, 6, 3)
    labels, images = collect(stream)
    alone = [collect(build_dataset(rec, "train", epoch=e, **kwargs)) for e in (1, 2, 3)]
    assert labels == sum((a[0] for a in alone), [])
    assert labels[:60] != labels[60:120]  # epochs differ
    resumed_labels, resumed_images = collect(build_dataset(rec, "train", epoch=2, epochs=2, skip=4, **kwargs))
    assert resumed_labels == labels[60 + 40:]
    if backend == "tfdata":  # pixels too: crops, flips and augmentations are a function of (seed, epoch)
        np.testing.assert_array_equal(images, np.concatenate([a[1] for a in alone]))
        np.testing.assert_array_equal(resumed_images, images[100:])
    with pytest.raises(UserError, match="skip 6: a resumed epoch has 6 batches"):
        build_dataset(rec, "train", skip=6, **kwargs)


def test_rank_plans_partition_the_records(data):
    rec = data
    for epoch in range(3):
        plans = [plan(rec, "train", training=True, batch_size=4, rank=r, world_size=4, seed=1, epoch=epoch)
                 for r in range(4)]
        seen = [(s.path, i) for p in plans for s in p.spans for i in range(s.start, s.stop)]
        assert len(seen) == len(set(seen)) == 60
    orders = {tuple(s.path for s in plan(rec, "train", training=True, batch_size=4, seed=1, epoch=e).files)
              for e in range(6)}
    assert len(orders) > 1  # the file order changes between epochs


def test_training_order_is_a_function_of_seed_and_epoch(data):
    rec = data
    def run(seed, epoch):
        b = build_dataset(rec, "train", batch_size=10, image_size=32, seed=seed, epoch=epoch)
        labels, images = collect(b)
        return labels, images
    first, again, other_epoch = run(1, 0), run(1, 0), run(1, 1)
    assert first[0] == again[0] and np.array_equal(first[1], again[1])  # a resumed run sees the same data
    assert first[0] != other_epoch[0]
    assert Counter(first[0]) == Counter(other_epoch[0])


def test_dali_reads_each_span_of_the_plan_permuted_by_seed_and_epoch_and_resumes_by_leaving_records_out(data):
    rec = data
    (plan_,) = plan_epochs(rec, "train", training=True, batch_size=10, epochs=range(2, 3), rank=1, world_size=2,
                           seed=4)
    indexes = dali.shard_indexes([plan_], default_index_dir(rec))
    runs = dali.reading_order(plan_, indexes, shuffle_seed=7, records=30)
    assert [r.path for r in runs] == [s.path for s in plan_.spans]
    for run, span in zip(runs, plan_.spans):
        lines = indexes[span.path][span.start:span.stop]
        assert sorted(run.records) == sorted(lines) and len(lines) > 2 and run.records != lines
    assert dali.reading_order(plan_, indexes, shuffle_seed=7, records=30) == runs  # a function of the seed
    assert dali.reading_order(plan_, indexes, shuffle_seed=8, records=30) != runs
    flat = [(r.path, line) for r in runs for line in r.records]
    resumed = dali.reading_order(plan_, indexes, shuffle_seed=7, records=30, skip=13)
    assert [(r.path, line) for r in resumed for line in r.records] == flat[13:]


def test_dali_epochs_split_over_several_pipelines_read_the_same_stream(data, monkeypatch):
    kwargs = dict(backend="dali", batch_size=10, image_size=32, seed=4, epoch=1, epochs=3)
    whole = collect(build_dataset(data, "train", **kwargs))[0]
    monkeypatch.setattr(dali, "MAX_INDEX_FILES", 2)  # a pipeline per epoch (each reads 3 shards)
    assert collect(build_dataset(data, "train", **kwargs))[0] == whole


def test_dali_names_a_missing_or_stale_index(data, tmp_path):
    copy = copy_files(data, tmp_path / "rec")
    with pytest.raises(UserError, match=rf"{tmp_path}/dali-index/train-00000-of-00003.idx: index not found"):
        build_dataset(copy, "train", backend="dali", batch_size=10, image_size=32)
    build_indexes(copy, tmp_path / "dali-index")
    idx = tmp_path / "dali-index" / "train-00001-of-00003.idx"
    idx.write_text("".join(idx.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(UserError, match=rf"{idx}: \d+ records, but the manifest lists \d+ for .*: the index is stale"):
        build_dataset(copy, "train", backend="dali", batch_size=10, image_size=32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_byte_flipped_after_indexing_is_named_never_trained_on(data, tmp_path, backend):
    """tf.data checks every record's CRCs as it reads; DALI does not, so a shard not as indexed is verified first."""
    copy = copy_files(data, tmp_path / "rec")
    build_indexes(copy, tmp_path / "dali-index")
    shard = copy / "train-00001-of-00003"
    offset, size = read_index(tmp_path / "dali-index" / f"{shard.name}.idx")[2]
    damaged = bytearray(shard.read_bytes())
    damaged[offset + size - 20] ^= 0x01  # inside the image bytes: same size, the file's time moves on
    shard.write_bytes(bytes(damaged))
    error = rf"{shard}: corrupt TFRecord at byte offset {offset}: data CRC mismatch"
    with pytest.raises(UserError, match=error):
        collect(build_dataset(copy, "train", backend=backend, batch_size=10, image_size=32))


def test_dali_verifies_a_shard_touched_since_indexing_once_then_reads_it(data, tmp_path):
    copy = copy_files(data, tmp_path / "rec")
    build_indexes(copy, tmp_path / "dali-index")
    before = collect(build_dataset(copy, "train", backend="dali", batch_size=10, image_size=32))[0]
    shard = copy / "train-00002-of-00003"
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))  # as `cp` without -p leaves it
    with pytest.warns(UserWarning, match=rf"{shard}: changed since it was indexed .* records verified in"):
        after = collect(build_dataset(copy, "train", backend="dali", batch_size=10, image_size=32))[0]
    np.testing.assert_array_equal(after, before)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # verified once per process
        build_dataset(copy, "train", backend="dali", batch_size=10, image_size=32)
    build_indexes(copy, tmp_path / "dali-index")
    assert json.loads((tmp_path / "dali-index" / "index.json").read_text())["shards"][shard.name]["mtime_ns"] == \
        shard.stat().st_mtime_ns


@pytest.mark.parametrize("backend", BACKENDS)
def test_flip_is_random(tmp_path, backend):
    src = tmp_path / "src"
    ramp = np.broadcast_to(np.linspace(0, 255, 96)[None, :, None], (64, 96, 3)).astype(np.uint8)
    for split, n in (("train", 60), ("val", 2)):
        (src / split / "ramp").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(ramp).save(src / split / "ramp" / f"{i}.jpg", quality=95)
    rec = prepare_records(src, tmp_path, train_shards=2, val_shards=1)
    _, images = collect(build_dataset(rec, "train", backend=backend, batch_size=20, image_size=32))
    flipped = images[:, :, :8].mean(axis=(1, 2, 3)) > images[:, :, -8:].mean(axis=(1, 2, 3))
    assert 0.25 < flipped.mean() < 0.75, flipped.mean()  # about half, not all and not none


@pytest.mark.parametrize("augment", ["autoaugment", "randaugment"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_augmentations_keep_dtype_shape_range_and_change_images(data, backend, augment):
    rec = data
    kwargs = dict(backend=backend, batch_size=20, image_size=32, seed=3)
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


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_randaugment_magnitude_reaches_both_pipelines(data, backend):
    """Stage-wise training sets a magnitude per stage: same seed, same ops chosen, other levels."""
    kwargs = dict(backend=backend, batch_size=20, image_size=32, seed=3, augment="randaugment")
    _, weak = collect(build_dataset(data, "train", randaug_magnitude=2, **kwargs))
    _, strong = collect(build_dataset(data, "train", randaug_magnitude=15, **kwargs))
    assert strong.shape == weak.shape == (60, 32, 32, 3) and strong.min() >= 0 and strong.max() <= 255
    changed = np.abs(strong - weak).mean(axis=(1, 2, 3)) > 1
    assert changed.mean() > 0.5, changed.mean()  # all but the level-free ops (Invert, Equalize, AutoContrast)


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


def test_mixup_and_cutmix_weigh_each_example_as_the_reference():
    images = tf.stack([tf.fill([8, 8, 3], float(v)) for v in (0, 60, 100, 140, 200, 255)])
    labels = tf.constant([0, 1, 2, 3, 4, 5])
    means = images.numpy().mean(axis=(1, 2, 3))
    same, onehot = mix_batch(images, labels, 6, tf.constant([0, 0]))
    assert np.array_equal(same, images) and np.array_equal(onehot, np.eye(6))
    partner = 5 - np.arange(6)
    for mixup_alpha, cutmix_alpha in ((0.2, 0.0), (0.0, 1.0), (0.2, 1.0)):
        weights = []
        for s in range(5):
            mixed, soft = (t.numpy() for t in mix_batch(images, labels, 6, tf.constant([s, 1]),
                                                        mixup_alpha, cutmix_alpha))
            np.testing.assert_allclose(soft.sum(axis=1), 1, rtol=1e-6)
            weight = soft[np.arange(6), np.arange(6)]
            assert (weight >= 0.5 - 1e-6).all()  # max(lam, 1 - lam): each example stays dominant
            # The image is the same mixture of the two partners as its label.
            np.testing.assert_allclose(mixed.mean(axis=(1, 2, 3)), weight * means + (1 - weight) * means[partner],
                                       rtol=1e-4, atol=1e-3)
            pasted = [np.isin(mixed[i], [images.numpy()[i, 0, 0, 0], images.numpy()[partner[i], 0, 0, 0]]).all()
                      for i in range(6)]
            if cutmix_alpha and not mixup_alpha:
                assert all(pasted)  # cutmix copies pixels, never blends
            if cutmix_alpha and mixup_alpha:  # half the batch each: cutmix first, mixup second
                assert all(pasted[:3])
                assert not any(pasted[3:][i] for i in range(3) if 0.5 < weight[3 + i] < 0.999)
            weights.append(weight)
        assert np.std(np.array(weights), axis=1).max() > 0.01  # drawn per example, not once per batch


def test_random_crop_covers_a_tenth_of_the_image_or_all_of_it():
    shapes = [tf.constant([300, 400, 3]), tf.constant([2000, 20, 3])]  # the second defeats most windows
    for shape in shapes:
        areas = []
        for s in range(200):
            y, x, h, w = tfdata.random_crop_window(shape, tf.constant([s, 9])).numpy()
            assert 0 <= y and y + h <= shape[0] and 0 <= x and x + w <= shape[1]
            areas.append(h * w / (shape[0] * shape[1]).numpy())
        assert min(areas) >= 0.1 - 0.01  # min_object_covered 0.1 of the whole-image box
    assert max(areas) == 1.0  # the sampler falls back to the whole image, as the reference


def append_non_image_record(rec: Path, copy: Path, shard_index: int) -> tuple[Path, int]:
    """Copy the records to ``copy`` and append an Example whose image is not an image to one validation shard
    (its manifest entry updated to match); return the shard and the new record's number."""
    from tensorflow.core.example import example_pb2, feature_pb2
    copy_files(rec, copy)
    bad = example_pb2.Example(features=feature_pb2.Features(feature={
        "image/encoded": feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[b"this is not an image"])),
        "image/class/label": feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[1]))}))
    shard = copy / f"validation-{shard_index:05d}-of-00002"
    with open(shard, "ab") as f:
        f.write(encode_record(bad.SerializeToString()))
    manifest = json.loads((copy / "manifest.json").read_text())
    entry = manifest["splits"]["validation"]["shards"][shard_index]
    entry["examples"] += 1
    entry["bytes"] = shard.stat().st_size
    (copy / "manifest.json").write_text(json.dumps(manifest))
    build_indexes(copy, default_index_dir(copy))
    return shard, entry["examples"] - 1


def test_read_error_diagnosis_is_bounded_and_says_so(data, tmp_path):
    rec = data
    clean = plan(rec, "validation", training=False, batch_size=8)
    assert "a transient I/O error?" in diagnose(clean, 0, "read failed")
    copy = tmp_path / "rec"
    shard, last = append_non_image_record(rec, copy, 1)
    damaged = plan(copy, "validation", training=False, batch_size=8)
    found = diagnose(damaged, 0, f"{shard}: Assert failed")
    assert found.startswith(f"{shard} (record {last} at byte offset")
    assert "corrupt or unreadable image" in found
    cut = diagnose(damaged, 0, "decode failed", seconds=0)
    assert cut.startswith("decode failed (diagnosis cut short after 0 s and 1 records")


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_shard_is_a_clear_error(data, tmp_path, backend):
    rec = data
    copy = copy_files(rec, tmp_path / "rec")
    shard = copy / "validation-00001-of-00002"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(UserError, match=r"validation-00001-of-00002: \d+ bytes but .*manifest.json records"):
        build_dataset(copy, "validation", backend=backend, batch_size=8, image_size=32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_image_record_is_an_error_naming_the_shard(data, tmp_path, backend):
    copy = tmp_path / "rec"
    _, last = append_non_image_record(data, copy, 0)
    with pytest.raises(UserError, match=rf"validation-00000-of-00002 \(record {last} at byte offset \d+\): "
                                        "corrupt or unreadable image"):
        collect(build_dataset(copy, "validation", backend=backend, batch_size=8, image_size=32))
