"""index: DALI index files equal tfrecord2idx's on valid shards and refuse damaged ones."""
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from datasets import copy_files, make_folders, read_split
from effnet.formats.records import load_manifest


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from conftest import run_cli
    root = tmp_path_factory.mktemp("index")
    make_folders(root / "src", train={"a": 9, "b": 7, "c": 8}, val={"a": 3, "b": 2, "c": 2})
    run_cli("prepare", "--source", "folders", "--input", str(root / "src"), "--output", str(root / "rec"),
            "--train-shards", "3", "--val-shards", "2", "--workers", "2", check=True)
    return root / "rec"


def test_index_equals_tfrecord2idx(cli, shards, tmp_path):
    cli("index", "--tfrecords", str(shards), "--output", str(tmp_path / "idx"), check=True)
    tfrecord2idx = Path(sys.executable).with_name("tfrecord2idx")
    names = sorted(p.name for p in shards.glob("*-of-*"))
    assert len(names) == 5
    for name in names:
        theirs = tmp_path / f"{name}.theirs"
        subprocess.run([str(tfrecord2idx), str(shards / name), str(theirs)], check=True, capture_output=True)
        assert (tmp_path / "idx" / f"{name}.idx").read_bytes() == theirs.read_bytes()


def test_truncated_shard_fails_naming_shard_and_offset(cli, shards, tmp_path):
    rec = copy_files(shards, tmp_path / "rec")
    shard = rec / "train-00001-of-00003"
    data = shard.read_bytes()
    shard.write_bytes(data[:-100])
    proc = cli("index", "--tfrecords", str(rec), "--output", str(tmp_path / "idx"))
    assert proc.returncode == 2
    assert f"{shard}: corrupt TFRecord at byte offset" in proc.stderr
    assert "truncated record" in proc.stderr
    assert not (tmp_path / "idx" / "index.json").exists()
    assert not (tmp_path / "idx" / "train-00001-of-00003.idx").exists()
    # tfrecord2idx, for comparison, exits 0 and indexes the torn record.
    tfrecord2idx = Path(sys.executable).with_name("tfrecord2idx")
    theirs = subprocess.run([str(tfrecord2idx), str(shard), str(tmp_path / "theirs.idx")], capture_output=True)
    assert theirs.returncode == 0


def test_flipped_byte_fails_the_crc_check(cli, shards, tmp_path):
    rec = copy_files(shards, tmp_path / "rec")
    shard = rec / "validation-00000-of-00002"
    data = bytearray(shard.read_bytes())
    data[-50] ^= 0x01
    shard.write_bytes(bytes(data))
    proc = cli("index", "--tfrecords", str(rec), "--output", str(tmp_path / "idx"))
    assert proc.returncode == 2
    assert f"{shard}: corrupt TFRecord at byte offset" in proc.stderr and "data CRC mismatch" in proc.stderr


def test_rerun_keeps_current_indexes_and_redoes_stale_ones(cli, shards, tmp_path):
    rec = copy_files(shards, tmp_path / "rec")
    idx = tmp_path / "idx"
    cli("index", "--tfrecords", str(rec), "--output", str(idx), check=True)
    stamps = {p.name: p.stat().st_mtime_ns for p in idx.glob("*.idx")}
    (idx / "train-00002-of-00003.idx").write_text("0 10\n")  # damaged index
    future = os.stat(rec / "train-00000-of-00003").st_mtime + 100
    os.utime(rec / "train-00000-of-00003", (future, future))  # shard newer than its index
    proc = cli("index", "--tfrecords", str(rec), "--output", str(idx), check=True)
    assert "2 indexed, 3 already current" in proc.stdout
    after = {p.name: p.stat().st_mtime_ns for p in idx.glob("*.idx")}
    assert [n for n in stamps if stamps[n] == after[n]] == [
        "train-00001-of-00003.idx", "validation-00000-of-00002.idx", "validation-00001-of-00002.idx"]


def test_count_mismatch_with_manifest_is_an_error(cli, shards, tmp_path):
    rec = copy_files(shards, tmp_path / "rec")
    text = (rec / "manifest.json").read_text().replace('"examples": 3,', '"examples": 4,', 1)
    (rec / "manifest.json").write_text(text)
    proc = cli("index", "--tfrecords", str(rec), "--output", str(tmp_path / "idx"))
    assert proc.returncode == 2 and "but" in proc.stderr and "manifest.json lists 4" in proc.stderr


def test_dali_reads_every_record_through_the_index(cli, shards, tmp_path):
    from nvidia.dali import fn, pipeline_def, tfrecord

    cli("index", "--tfrecords", str(shards), "--output", str(tmp_path / "idx"), check=True)
    files = sorted(str(p) for p in shards.glob("train-*"))
    indexes = [str(tmp_path / "idx" / f"{Path(f).name}.idx") for f in files]

    @pipeline_def(batch_size=5, num_threads=1, device_id=None)
    def pipe():
        inputs = fn.readers.tfrecord(path=files, index_path=indexes, random_shuffle=False, pad_last_batch=True,
                                     name="reader", features={
                                         "image/encoded": tfrecord.FixedLenFeature((), tfrecord.string, ""),
                                         "image/class/label": tfrecord.FixedLenFeature([1], tfrecord.int64, -1)})
        images = fn.decoders.image(inputs["image/encoded"], device="cpu")
        return images.shape(), inputs["image/class/label"]

    p = pipe()
    p.build()
    total = p.epoch_size("reader")
    labels, shapes = [], []
    for _ in range(-(-total // 5)):
        shape_batch, label_batch = p.run()
        shapes += [tuple(np.array(s)) for s in shape_batch]
        labels += [int(np.array(y)[0]) for y in label_batch]
    labels, shapes = labels[:total], shapes[:total]
    expected = read_split(shards, "train")
    assert total == len(expected) == load_manifest(shards)["splits"]["train"]["examples"]
    assert labels == [e["label"] for e in expected]  # same records, same order
    assert Counter(labels) == {1: 9, 2: 7, 3: 8}
    assert set(shapes) == {(40, 48, 3)}
