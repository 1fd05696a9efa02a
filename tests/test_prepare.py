"""prepare: real images in, TFRecord shards out, every image once with its label."""
import csv
import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import HANG_GUARD, REPO, memory_limited
from datasets import jpeg_bytes, make_folders, read_shard, read_split
from effnet.core import cgroup
from effnet.core.errors import EXIT_OUT_OF_MEMORY
from effnet.formats.dllog import read_records
from effnet.formats.records import load_manifest
from effnet.stages.demo_data import write_demo
from effnet.stages.prepare.plan import plan_files
from effnet.stages.prepare.sources import list_folders


def prepare(cli, src, out, *extra, source="folders", check=True):
    return cli("prepare", "--source", source, "--input", str(src), "--output", str(out),
               "--workers", "2", *extra, check=check)


def test_folders_round_trip(cli, tmp_path):
    written = make_folders(tmp_path / "src", train={"cat": 7, "dog": 5, "emu": 6}, val={"cat": 2, "dog": 3, "emu": 1})
    prepare(cli, tmp_path / "src", tmp_path / "out", "--train-shards", "3", "--val-shards", "2")
    m = load_manifest(tmp_path / "out")
    assert [c["id"] for c in m["classes"]] == ["cat", "dog", "emu"]
    assert m["label_offset"] == 1
    assert (tmp_path / "out/labels.txt").read_text() == "0\tcat\tcat\n1\tdog\tdog\n2\temu\temu\n"
    for split, src_split, n_shards in (("train", "train", 3), ("validation", "val", 2)):
        examples = read_split(tmp_path / "out", split)
        assert m["splits"][split]["examples"] == len(examples)
        assert [s["file"] for s in m["splits"][split]["shards"]] == [
            f"{split}-{i:05d}-of-{n_shards:05d}" for i in range(n_shards)]
        assert sum(s["examples"] for s in m["splits"][split]["shards"]) == len(examples)
        sources = {p: c for p, c in written.items() if f"/{src_split}/" in p}
        by_name = {os.path.basename(p): p for p in sources}
        assert sorted(e["filename"] for e in examples) == sorted(by_name)  # each exactly once
        for e in examples:
            path = by_name[e["filename"]]
            assert e["encoded"] == Path(path).read_bytes()  # JPEG copied byte for byte
            assert m["classes"][e["label"] - 1]["id"] == sources[path] == e["text"] == e["synset"]
            assert (e["height"], e["width"], e["format"]) == (40, 48, b"JPEG")
    for shard in m["splits"]["train"]["shards"]:
        data = (tmp_path / "out" / shard["file"]).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (shard["bytes"], shard["sha256"])
    params, result = read_records(tmp_path / "out/prepare.dllog.json")
    assert params["step"] == "PARAMETER" and params["data"]["train_shards"] == 3
    assert result["step"] == [] and result["data"]["examples"] == 18 + 6 and result["data"]["images_per_second"] > 0


def test_shuffle_is_deterministic_by_seed(cli, tmp_path):
    make_folders(tmp_path / "src", train={"a": 6, "b": 6}, val={"a": 2, "b": 2})
    for name, seed in (("one", "3"), ("two", "3"), ("other", "4")):
        prepare(cli, tmp_path / "src", tmp_path / name, "--train-shards", "2", "--val-shards", "1", "--seed", seed)
    order = {n: [e["filename"] for e in read_split(tmp_path / n, "train")] for n in ("one", "two", "other")}
    assert order["one"] == order["two"] != order["other"]
    assert sorted(order["one"]) == sorted(order["other"])


@pytest.mark.parametrize("name, data", [
    ("png.png", jpeg_bytes(1, fmt="PNG")),
    ("rgba.png", jpeg_bytes(2, mode="RGBA", fmt="PNG")),
    ("cmyk.jpg", jpeg_bytes(3, mode="CMYK")),
    ("grey.jpg", jpeg_bytes(4, mode="L")),
    ("palette.gif", jpeg_bytes(5, mode="P", fmt="GIF")),
])
def test_non_rgb_jpeg_inputs_become_rgb_jpeg(cli, tmp_path, name, data):
    make_folders(tmp_path / "src", train={"a": 1, "b": 1}, val={"a": 1})
    (tmp_path / "src/train/a" / name).write_bytes(data)
    prepare(cli, tmp_path / "src", tmp_path / "out", "--train-shards", "1", "--val-shards", "1")
    (converted,) = [e for e in read_split(tmp_path / "out", "train") if e["filename"] == name]
    assert converted["encoded"][:2] == b"\xff\xd8"  # a JPEG
    image = tf.io.decode_jpeg(converted["encoded"], channels=0)
    assert image.shape == (40, 48, 3)
    assert load_manifest(tmp_path / "out")["converted"] == 1


def test_imagenet_layout_with_csv_labels_and_synsets(cli, tmp_path):
    src = tmp_path / "ILSVRC"
    make_folders(src, train={"n01440764": 3, "n01443537": 2, "n01484850": 2}, val={})
    (src / "val").mkdir()
    truth = {}
    for i, wnid in enumerate(["n01484850", "n01440764", "n01443537", "n01440764"]):
        stem = f"ILSVRC2012_val_{i + 1:08d}"
        (src / "val" / f"{stem}.JPEG").write_bytes(jpeg_bytes(100 + i))
        truth[f"{stem}.JPEG"] = wnid
    with open(src / "LOC_val_solution.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ImageId", "PredictionString"])
        for name, wnid in truth.items():
            w.writerow([name[:-5], f"{wnid} 10 20 30 40 {wnid} 1 2 3 4"])
    synsets = tmp_path / "LOC_synset_mapping.txt"
    synsets.write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n"
                       "n01484850 great white shark, white shark\n")
    prepare(cli, src, tmp_path / "out", "--train-shards", "2", "--val-shards", "1", "--synsets", str(synsets),
            source="imagenet")
    assert (tmp_path / "out/labels.txt").read_text().splitlines() == [
        "0\tn01440764\ttench, Tinca tinca", "1\tn01443537\tgoldfish, Carassius auratus",
        "2\tn01484850\tgreat white shark, white shark"]
    val = read_split(tmp_path / "out", "validation")
    order = ["n01440764", "n01443537", "n01484850"]
    assert {e["filename"]: order[e["label"] - 1] for e in val} == truth
    assert {e["filename"]: e["synset"] for e in val} == truth
    assert len(read_split(tmp_path / "out", "train")) == 7

    # The same labels as one wnid per line, in sorted image order.
    lines = tmp_path / "val_labels.txt"
    lines.write_text("".join(truth[k] + "\n" for k in sorted(truth)))
    prepare(cli, src, tmp_path / "out2", "--train-shards", "2", "--val-shards", "1", "--val-labels", str(lines),
            source="imagenet")
    assert {e["filename"]: order[e["label"] - 1] for e in read_split(tmp_path / "out2", "validation")} == truth


def test_synsets_file_gives_the_standard_class_ids_for_a_subset(cli, tmp_path):
    """A partial ImageNet keeps the ids of the full one: position in the synsets file, not in the folders."""
    src = tmp_path / "ILSVRC"
    make_folders(src, train={"n03": 2, "n01": 2}, val={"n03": 1, "n01": 1})
    synsets = tmp_path / "LOC_synset_mapping.txt"
    synsets.write_text("n04 four\nn03 three\nn02 two\nn01 one\n")  # the file's order, not sorted
    prepare(cli, src, tmp_path / "out", "--train-shards", "1", "--val-shards", "1", "--synsets", str(synsets),
            source="imagenet")
    m = load_manifest(tmp_path / "out")
    assert m["num_classes"] == 4
    assert [c["id"] for c in m["classes"]] == ["n04", "n03", "n02", "n01"]
    for split in ("train", "validation"):
        examples = read_split(tmp_path / "out", split)
        assert {e["synset"]: e["label"] - 1 for e in examples} == {"n03": 1, "n01": 3}
        assert {e["synset"]: e["text"] for e in examples} == {"n03": "three", "n01": "one"}

    (src / "train/n09").mkdir()
    (src / "train/n09/x.jpg").write_bytes(jpeg_bytes(5))
    proc = prepare(cli, src, tmp_path / "out2", "--synsets", str(synsets), source="folders", check=False)
    assert proc.returncode == 2
    assert f"{src / 'train/n09'}: class 'n09' is not listed in {synsets}" in proc.stderr


def test_imagenet_label_errors_name_the_image(cli, tmp_path):
    src = tmp_path / "src"
    make_folders(src, train={"n1": 2, "n2": 2}, val={})
    (src / "val").mkdir()
    (src / "val/ILSVRC2012_val_00000001.JPEG").write_bytes(jpeg_bytes(1))
    (src / "val/ILSVRC2012_val_00000002.JPEG").write_bytes(jpeg_bytes(2))
    (src / "LOC_val_solution.csv").write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n1 1 2 3 4\n")
    proc = prepare(cli, src, tmp_path / "out", source="imagenet", check=False)
    assert proc.returncode == 2
    assert "ILSVRC2012_val_00000002.JPEG: validation image has no label" in proc.stderr
    (src / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\nILSVRC2012_val_00000001,n1 1\nILSVRC2012_val_00000002,n9 1\n")
    proc = prepare(cli, src, tmp_path / "out", source="imagenet", check=False)
    assert "ILSVRC2012_val_00000002.JPEG: label 'n9' is not among the classes" in proc.stderr


def test_empty_class_is_an_error(cli, tmp_path):
    make_folders(tmp_path / "src", train={"a": 2, "b": 2}, val={"a": 1})
    (tmp_path / "src/train/empty").mkdir()
    proc = prepare(cli, tmp_path / "src", tmp_path / "out", check=False)
    assert proc.returncode == 2
    assert f"{tmp_path / 'src/train/empty'}: empty class" in proc.stderr


WORKER_SIDE = """
import sys
from effnet.formats.records import check_example, encode_example
jpeg = open(sys.argv[1], "rb").read()
data = encode_example(jpeg, 40, 48, 2, "n0001", "cat", "cat_0.jpg")
check_example(data, "here")
sys.stdout.buffer.write(data)
assert "tensorflow" not in sys.modules, "imported TensorFlow"
"""


def test_workers_write_tensorflow_examples_without_importing_tensorflow(tmp_path):
    """What the prepare workers write is TensorFlow's serialized tf.train.Example, byte for byte, from
    protobuf alone (importing TensorFlow cost every worker 5.5 s of CPU and 0.4 GiB)."""
    jpeg = tmp_path / "cat.jpg"
    jpeg.write_bytes(jpeg_bytes(3))
    proc = subprocess.run([sys.executable, "-c", WORKER_SIDE, str(jpeg)], cwd=REPO, capture_output=True,
                          timeout=HANG_GUARD)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]

    def feature(value):
        if isinstance(value, int):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    expected = tf.train.Example(features=tf.train.Features(feature={key: feature(value) for key, value in {
        "image/encoded": jpeg.read_bytes(), "image/format": b"JPEG", "image/colorspace": b"RGB",
        "image/channels": 3, "image/height": 40, "image/width": 48, "image/class/label": 3,
        "image/class/text": b"cat", "image/class/synset": b"n0001", "image/filename": b"cat_0.jpg"}.items()}))
    assert tf.train.Example.FromString(proc.stdout) == expected
    assert proc.stdout == expected.SerializeToString()


def test_corrupt_image_fails_naming_it_or_is_skipped(cli, tmp_path):
    make_folders(tmp_path / "src", train={"a": 3, "b": 3}, val={"a": 1, "b": 1})
    bad = tmp_path / "src/train/b/truncated.jpg"
    bad.write_bytes(jpeg_bytes(77, size=(200, 150))[:1500])
    proc = prepare(cli, tmp_path / "src", tmp_path / "out", "--train-shards", "2", "--val-shards", "1", check=False)
    assert proc.returncode == 2
    assert f"{bad}: corrupt or unreadable image" in proc.stderr
    assert not (tmp_path / "out/manifest.json").exists()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".train")]  # no temp left

    prepare(cli, tmp_path / "src", tmp_path / "out", "--train-shards", "2", "--val-shards", "1", "--skip-corrupt")
    m = load_manifest(tmp_path / "out")
    assert [s["file"] for s in m["skipped"]] == [str(bad)]
    assert m["splits"]["train"]["examples"] == 6
    assert "truncated.jpg" not in [e["filename"] for e in read_split(tmp_path / "out", "train")]


# A worker that reaches a held image (a FIFO in its place) waits in open() or read() until the test writes it:
# the test stops prepare at a known image however fast or loaded the machine is.
def held_image(src: Path, shard: int, train_shards: int) -> tuple[Path, bytes]:
    """Replace the first image of train shard ``shard`` with a FIFO; return its path and the image's bytes."""
    tasks = plan_files(list_folders(src), src, {"train": train_shards, "validation": 1}, 0, False)
    path = Path(tasks[shard].items[0][0])
    image = path.read_bytes()
    path.unlink()
    os.mkfifo(path)
    return path, image


def writer_when_read(fifo: Path, proc: subprocess.Popen) -> int:
    """Once a worker opens ``fifo`` (it then waits for data), the write end."""
    deadline = time.time() + HANG_GUARD
    while proc.poll() is None and time.time() < deadline:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        time.sleep(0.05)
    raise AssertionError(f"prepare ended (status {proc.poll()}) before a worker reached {fifo}")


def reading_worker(out: Path, fifo: Path, proc: subprocess.Popen, known: set[int]) -> tuple[int, str]:
    """The worker, not among ``known``, that has ``fifo`` open (its temporary shard names its pid); its shard."""
    deadline = time.time() + HANG_GUARD
    while proc.poll() is None and time.time() < deadline:
        for tmp in out.glob(".*.tmp-*"):
            pid = int(tmp.name.rsplit("-", 1)[1])
            try:
                if pid not in known and any(os.readlink(fd) == str(fifo) for fd in Path(f"/proc/{pid}/fd").iterdir()):
                    return pid, tmp.name[1:].split(".tmp-")[0]
            except OSError:  # gone, or an fd closed meanwhile
                continue
        time.sleep(0.05)
    raise AssertionError(f"prepare ended (status {proc.poll()}) before a worker read {fifo}")


def test_killed_prepare_resumes_only_missing_shards(tmp_path):
    src = write_demo(tmp_path / "demo", train_per_class=30)
    args = [sys.executable, "-m", "effnet", "prepare", "--source", "folders", "--input", str(src),
            "--train-shards", "30", "--val-shards", "2", "--workers", "1"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = tmp_path / "out"
    fifo, image = held_image(src, shard=4, train_shards=30)  # one worker: shards 0-3 are written before it
    proc = subprocess.Popen(args + ["--output", str(out)], cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(writer_when_read(fifo, proc))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    fifo.unlink()
    fifo.write_bytes(image)
    done = sorted(p.name[:-5] for p in (out / ".receipts").glob("*.json"))
    assert done == [f"train-{i:05d}-of-00030" for i in range(4)]
    assert not (out / "manifest.json").exists()
    before = {name: (out / name).stat().st_mtime_ns for name in done}

    rerun = subprocess.run(args + ["--output", str(out)], cwd=REPO, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "prepare: 4 of 32 shards already complete, 28 to write" in rerun.stdout
    assert {name: (out / name).stat().st_mtime_ns for name in done} == before  # not rewritten
    clean = subprocess.run(args + ["--output", str(tmp_path / "clean")], cwd=REPO, env=env, capture_output=True)
    assert clean.returncode == 0
    resumed, fresh = load_manifest(out), load_manifest(tmp_path / "clean")
    assert resumed["splits"] == fresh["splits"]  # same shards, counts and checksums as a run never killed
    assert not list(out.glob(".*.tmp-*"))


def test_changed_input_rewrites_its_shard(cli, tmp_path):
    make_folders(tmp_path / "src", train={"a": 4, "b": 4}, val={"a": 1, "b": 1})
    prepare(cli, tmp_path / "src", tmp_path / "out", "--train-shards", "2", "--val-shards", "1")
    first = load_manifest(tmp_path / "out")
    (tmp_path / "src/train/a/a_0.jpg").write_bytes(jpeg_bytes(999))
    proc = prepare(cli, tmp_path / "src", tmp_path / "out", "--train-shards", "2", "--val-shards", "1")
    assert "2 of 3 shards already complete, 1 to write" in proc.stdout
    second = load_manifest(tmp_path / "out")
    changed = [a["file"] for a, b in zip(first["splits"]["train"]["shards"], second["splits"]["train"]["shards"])
               if a["sha256"] != b["sha256"]]
    assert len(changed) == 1


def test_existing_tfrecords_are_validated_not_rewritten(cli, tmp_path):
    make_folders(tmp_path / "src", train={"a": 3, "b": 3, "c": 2}, val={"a": 1, "c": 1})
    prepare(cli, tmp_path / "src", tmp_path / "written", "--train-shards", "2", "--val-shards", "1")
    existing = tmp_path / "existing"
    existing.mkdir()
    for shard in (tmp_path / "written").glob("*-of-*"):
        (existing / shard.name).write_bytes(shard.read_bytes())
    prepare(cli, existing, tmp_path / "out", source="tfrecords")
    m = load_manifest(tmp_path / "out")
    assert (m["num_classes"], m["label_offset"]) == (3, 1)
    assert [c["name"] for c in m["classes"]] == ["a", "b", "c"]
    assert m["splits"]["train"]["examples"] == 8 and m["splits"]["validation"]["examples"] == 2
    assert (tmp_path / "out/train-00000-of-00002").resolve() == existing / "train-00000-of-00002"

    data = bytearray((existing / "train-00001-of-00002").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (existing / "train-00001-of-00002").write_bytes(bytes(data))
    proc = prepare(cli, existing, tmp_path / "out", source="tfrecords", check=False)
    assert proc.returncode == 2
    assert "train-00001-of-00002: corrupt TFRecord at byte offset" in proc.stderr


def test_tfds_source_reads_local_data_only_and_shuffles_a_class_sorted_split(cli, tmp_path):
    import tensorflow_datasets as tfds

    rng = np.random.default_rng(0)
    def split(n):  # class-sorted, as TFDS builds of class folders are
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        return tf.data.Dataset.from_tensor_slices({"image": images, "label": np.arange(n) * 3 // n})
    tfds.dataset_builders.store_as_tfds_dataset(
        name="tiny_shapes", version="1.0.0", data_dir=str(tmp_path / "tfds"),
        features=tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(32, 32, 3)),
                                             "label": tfds.features.ClassLabel(names=["x", "y", "z"])}),
        split_datasets={"train": split(24), "test": split(6)}, disable_shuffling=True)
    orders = {}
    for seed in ("0", "1"):
        out = tmp_path / f"out{seed}"
        proc = prepare(cli, tmp_path / "tfds", out, "--tfds-name", "tiny_shapes", "--train-shards", "2",
                       "--val-shards", "1", "--seed", seed, source="tfds", check=False)
        assert proc.returncode == 0, proc.stderr
        train = read_split(out, "train")
        assert Counter(e["text"] for e in train) == {"x": 8, "y": 8, "z": 8}
        for shard in sorted(out.glob("train-*")):
            assert len({e["text"] for e in read_shard(shard)}) == 3  # every shard mixes the classes
        orders[seed] = [e["encoded"] for e in train]
        assert len(read_split(out, "validation")) == 6
    assert orders["0"] != orders["1"] and sorted(orders["0"]) == sorted(orders["1"])

    proc = prepare(cli, tmp_path / "tfds", tmp_path / "missing", "--tfds-name", "mnist", source="tfds", check=False)
    assert proc.returncode == 2
    assert f"tfds dataset 'mnist' is not prepared in {tmp_path / 'tfds'} (this stage never downloads)" in proc.stderr
    assert not (tmp_path / "tfds" / "mnist").exists()  # nothing downloaded or built


@pytest.mark.parametrize("kills", [1, 2])
def test_a_dead_worker_is_retried_once_then_named(tmp_path, kills):
    src = write_demo(tmp_path / "demo", train_per_class=6)
    out = tmp_path / "out"
    fifo, image = held_image(src, shard=1, train_shards=4)
    proc = subprocess.Popen([sys.executable, "-m", "effnet", "prepare", "--source", "folders", "--input", str(src),
                             "--output", str(out), "--train-shards", "4", "--val-shards", "1", "--workers", "1"],
                            cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    writer, killed, pids = writer_when_read(fifo, proc), [], set()
    for _ in range(kills):  # SIGKILL the worker waiting for the held image, then the one retrying its shard
        pid, shard = reading_worker(out, fifo, proc, pids)
        os.kill(pid, signal.SIGKILL)
        pids.add(pid)
        killed.append(shard)
    if kills == 1:  # the retry gets the image
        reading_worker(out, fifo, proc, pids)
        os.write(writer, image)
    os.close(writer)
    stdout, stderr = proc.communicate(timeout=HANG_GUARD)
    assert killed == ["train-00001-of-00004"] * kills  # the retry runs the same shard first
    shard = out / killed[0]
    # this machine's kernel counts OOM kills per cgroup: a SIGKILL from elsewhere is said not to be one
    assert (f"prepare: the worker writing {shard} was killed by SIGKILL (not for memory: no OOM kill in its cgroup); "
            "retrying the shard") in stdout
    if kills == 1:
        assert proc.returncode == 0, stderr
        assert load_manifest(out)["splits"]["train"]["examples"] == 60
    else:
        assert proc.returncode == 2
        assert f"{shard}: the worker writing this shard was killed by SIGKILL (not for memory" in stderr
        assert "2 times; lower --workers or check the shard's inputs" in stderr
        assert not (out / "manifest.json").exists()
    assert not list(out.glob(".*.tmp-*"))


def test_default_worker_count_follows_the_cpus_and_memory_the_job_has():
    script = ("import os; from effnet.core.resources import default_workers; os.sched_setaffinity(0, {0}); "
              "print(default_workers(1), default_workers(1 << 60))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True)
    assert proc.stdout.split() == ["1", "1"]  # one CPU bound; memory for less than one worker still gives one
    script = "from effnet.core.resources import default_workers; print(default_workers(1 << 28))"
    with memory_limited(400) as join:  # the job's limit on the task group's parent, as SLURM's task/cgroup sets it
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True,
                              preexec_fn=join)
    assert proc.stdout.split() == ["1"]  # 2 CPUs here, but 400 MiB (less what this process holds) hold one 256 MiB worker


def test_a_cgroups_limit_and_oom_kills_are_read_in_slurms_v1_layout_and_in_a_v2_container(tmp_path):
    def files(root: Path, entries: dict) -> None:
        for name, text in entries.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)

    v1, job = tmp_path / "v1", "memory/slurm_n0/uid_0/job_7"
    files(v1, {"proc": "4:memory:/slurm_n0/uid_0/job_7/step_0/task_0\n0::/\n",
               f"{job}/memory.limit_in_bytes": str(100 << 20), f"{job}/memory.usage_in_bytes": str(30 << 20),
               f"{job}/step_0/task_0/memory.limit_in_bytes": "9223372036854771712",  # none of its own
               f"{job}/step_0/task_0/memory.usage_in_bytes": str(10 << 20),
               f"{job}/step_0/task_0/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"})
    groups = cgroup.memory_groups(v1 / "proc", v1)
    assert groups[0] == v1 / job / "step_0/task_0" and v1 / job in groups
    assert (cgroup.memory_limit(groups), cgroup.memory_left(groups), cgroup.oom_kills(groups)) == (
        100 << 20, 70 << 20, 3)
    v2 = tmp_path / "v2"  # a container in its own cgroup namespace: its group is the mounted root
    files(v2, {"proc": "0::/\n", "cgroup.controllers": "cpu memory\n", "memory.max": str(1 << 30),
               "memory.current": str(1 << 28), "memory.events": "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n"})
    groups = cgroup.memory_groups(v2 / "proc", v2)
    assert (cgroup.memory_limit(groups), cgroup.memory_left(groups), cgroup.oom_kills(groups)) == (
        1 << 30, 3 << 28, 1)


def test_a_worker_killed_for_memory_is_named_so_with_the_worker_count_to_lower(tmp_path):
    src = write_demo(tmp_path / "demo", train_per_class=2)
    big = next((src / "train").rglob("*.jpg"))
    Image.new("RGB", (10000, 10000), (90, 120, 200)).save(big.with_suffix(".png"))  # 300 MB once decoded
    big.unlink()
    out = tmp_path / "out"
    with memory_limited(250) as join:
        proc = subprocess.run([sys.executable, "-m", "effnet", "prepare", "--source", "folders", "--input", str(src),
                               "--output", str(out), "--train-shards", "2", "--val-shards", "1", "--workers", "2"],
                              cwd=REPO, capture_output=True, text=True, timeout=HANG_GUARD, preexec_fn=join)
    assert proc.returncode == EXIT_OUT_OF_MEMORY, proc.stderr[-2000:]  # as if killed itself: a crash, not a data error
    assert ("the worker writing this shard was killed for memory by the kernel's OOM killer, with 2 workers writing "
            "at once (each budgeted 256 MiB by default), 2 times; lower --workers, or give the stage more memory"
            ) in proc.stderr, proc.stderr[-2000:]
    assert "retrying the shard" in proc.stdout and not (out / "manifest.json").exists()
