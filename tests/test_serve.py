"""Evaluate, export and infer on a real trained run (the test-sized EfficientNet at 32 px, a few steps on demo data)."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import HANG_GUARD, REPO, TEST_ARCH, run_cli
from datasets import make_folders, read_split
from effnet.core import layout
from effnet.formats import checkpoints, exported_model
from effnet.formats.dllog import read_records

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
VAL_PER_CLASS = 5  # 50 validation images: 7 batches of 7 plus one
# One worker (pytest-xdist) trains the run for all of them.
pytestmark = [pytest.mark.xdist_group("serve"), pytest.mark.slow(minutes=4)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished run (EMA and raw weights, a checkpoint per epoch) and its data."""
    root = tmp_path_factory.mktemp("serve")
    run_cli("demo-data", "--output", str(root / "demo"), "--train-per-class", "6", "--val-per-class",
            str(VAL_PER_CLASS), check=True)
    run_cli("prepare", "--source", "folders", "--input", str(root / "demo"), "--output", str(root / "rec"),
            "--train-shards", "2", "--val-shards", "2", "--workers", "2", check=True)
    run_cli("train", "--data", str(root / "rec"), "--output", str(root / "run"), "--set", f"model.arch={TEST_ARCH}",
            "--set", "train.epochs=3",
            "--set", "train.batch_size=8", "--set", "train.lr_init=0.05", "--set", "train.lr_warmup_epochs=0",
            "--set", "model.bn_momentum=0.5",  # 21 steps: the moving statistics must catch up for inference
            "--set", "train.ema_decay=0.5", "--set", "train.checkpoint_every=1",
            "--set", "train.eval_every=null", check=True)
    return root


def evaluate(run, *args, name="metrics"):
    out = run / f"{name}.json"
    proc = run_cli("evaluate", "--model", str(run / "run"), "--data", str(run / "rec"), "--output", str(out), *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def ema_metrics(run):
    """evaluate's metrics with the defaults: EMA weights, the run's eval.batch_size (64: one padded batch)."""
    return evaluate(run, name="ema")


def hand_predictions(run, weights="ema"):
    """Probabilities and labels of every validation example, preprocessed and predicted one by one here."""
    import tensorflow as tf

    from effnet.data.tfdata import eval_image
    from effnet.formats import trained_run

    model = trained_run.load_model(run / "run", weights)
    examples = read_split(run / "rec", "validation")
    padding = trained_run.load_summary(run / "run")["crop_padding"]
    images = np.stack([eval_image(tf.constant(e["encoded"]), 32, padding).numpy() for e in examples])
    probabilities = tf.nn.softmax(model(images, training=False)).numpy()
    return probabilities, np.array([e["label"] - 1 for e in examples]), examples


def test_evaluate_counts_every_example_once_and_matches_top1_by_hand(run):
    metrics = evaluate(run, "--set", "eval.batch_size=7", "--confusion-png", str(run / "confusion.png"), name="odd")
    probabilities, labels, _ = hand_predictions(run)
    assert metrics["examples"] == 10 * VAL_PER_CLASS
    assert metrics["top1"] == pytest.approx(np.mean(probabilities.argmax(1) == labels), abs=1e-9)
    top5 = np.argsort(-probabilities, 1)[:, :5]
    assert metrics["top5"] == pytest.approx(np.mean([y in t for y, t in zip(labels, top5)]), abs=1e-9)
    loss = -np.mean(np.log(probabilities[np.arange(len(labels)), labels]))
    assert metrics["loss"] == pytest.approx(loss, rel=1e-4)
    confusion = np.array(metrics["confusion"])
    assert confusion.sum() == 50 and np.trace(confusion) == round(metrics["top1"] * 50)
    assert metrics["batches"] == 8 and metrics["warmup_batches"] == 2
    latency = metrics["latency_ms"]
    assert latency["p50"] <= latency["p90"] <= latency["p95"] <= latency["p99"]
    assert (run / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = read_records(run / "odd.dllog.json")
    logged = next(r["data"] for r in records if r["type"] == "LOG")
    assert logged["eval_accuracy_top_1"] == metrics["top1"]
    assert {"avg_exp_per_second_eval", "latency_90pct", "latency_95pct", "latency_99pct"} <= set(logged)


def test_evaluate_on_two_ranks_counts_the_same_examples(run, ema_metrics):
    single = ema_metrics
    out = run / "two.json"
    proc = subprocess.run([str(Path(sys.executable).with_name("horovodrun")), "--gloo", "-np", "2", "-H",
                           "localhost:2", sys.executable, "-m", "effnet", "evaluate", "--model", str(run / "run"),
                           "--data", str(run / "rec"), "--output", str(out), "--set", "eval.batch_size=3"],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=HANG_GUARD)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    two = json.loads(out.read_text())
    assert two["world_size"] == 2 and two["examples"] == single["examples"] == 50
    assert two["top1"] == single["top1"] and two["confusion"] == single["confusion"]
    assert two["loss"] == pytest.approx(single["loss"], rel=1e-5)


def test_ema_and_raw_weights_are_selectable_and_differ(run, ema_metrics):
    ema, raw = ema_metrics, evaluate(run, "--weights", "raw", name="raw")
    assert ema["weights"] == "ema" and raw["weights"] == "raw"
    assert ema["loss"] != pytest.approx(raw["loss"], rel=1e-3)
    # The last checkpoint holds the final state: its raw weights evaluate as the final raw model.
    last = sorted((run / "run" / "checkpoints").glob("ckpt-*"))[-1]
    from_checkpoint = evaluate(run, "--weights", "raw", "--checkpoint", str(last), name="checkpoint")
    assert from_checkpoint["loss"] == pytest.approx(raw["loss"], rel=1e-6)
    assert from_checkpoint["checkpoint"] == str(last)


def test_incompatible_checkpoint_data_and_missing_run_are_refused(run, tmp_path):
    other = tmp_path / "ckpt-000000001"
    shutil.copytree(sorted((run / "run" / "checkpoints").glob("ckpt-*"))[-1], other)
    meta, _ = checkpoints.read(other)
    (other / layout.CHECKPOINT_META).write_text(json.dumps({**meta, "arch": "efficientnet-b3", "num_classes": 3}))
    proc = run_cli("evaluate", "--model", str(run / "run"), "--data", str(run / "rec"), "--output",
                   str(tmp_path / "m.json"), "--checkpoint", str(other))
    assert proc.returncode == 2
    assert f"arch 'efficientnet-b3' in the checkpoint, '{TEST_ARCH}' in" in proc.stderr
    assert "num_classes 3 in the checkpoint, 10 in" in proc.stderr

    make_folders(tmp_path / "cats", {"cat": 2, "dog": 2}, {"cat": 1, "dog": 1})
    run_cli("prepare", "--source", "folders", "--input", str(tmp_path / "cats"), "--output", str(tmp_path / "rec"),
            "--train-shards", "1", "--val-shards", "1", check=True)
    proc = run_cli("evaluate", "--model", str(run / "run"), "--data", str(tmp_path / "rec"), "--output",
                   str(tmp_path / "m.json"))
    assert proc.returncode == 2
    assert f"{tmp_path / 'rec'} has 2 classes and {run / 'run'} was trained on 10" in proc.stderr
    assert "the data's 'cat', the model's 'checker'" in proc.stderr

    proc = run_cli("evaluate", "--model", str(tmp_path / "nowhere"), "--data", str(run / "rec"), "--output",
                   str(tmp_path / "m.json"))
    assert proc.returncode == 2 and "nowhere: no such run directory" in proc.stderr
    assert not (tmp_path / "m.json").exists()


FRESH_PROCESS = """
import json, sys
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1] + "/saved_model")
encoded = [open(p, "rb").read() for p in sys.argv[3:]]
by_bytes = loaded.signatures["serving_default"](images=tf.constant(encoded))
pixels = tf.io.decode_jpeg(encoded[0], channels=3)[None]
by_pixels = loaded.signatures["serve_pixels"](images=pixels)
np.savez(sys.argv[2], **{f"bytes_{k}": v.numpy() for k, v in by_bytes.items()},
         **{f"pixels_{k}": v.numpy() for k, v in by_pixels.items()})
assert not any(name.startswith("effnet") for name in sys.modules), "the export needed effnet"
"""


@pytest.fixture(scope="module")
def exported(run):
    run_cli("export", "--model", str(run / "run"), "--output", str(run / "export"), "--top-k", "10", "--onnx",
            check=True)
    return run / "export"


def test_export_loads_without_effnet_and_equals_the_keras_model(run, exported, tmp_path):
    probabilities, _, examples = hand_predictions(run)
    files = []
    for i, e in enumerate(examples[:6]):
        files.append(tmp_path / f"{i}.jpg")
        files[-1].write_bytes(e["encoded"])
    script = tmp_path / "load.py"
    script.write_text(FRESH_PROCESS)
    proc = subprocess.run([sys.executable, str(script), str(exported), str(tmp_path / "out.npz"), *map(str, files)],
                          cwd=tmp_path, env={**ENV, "PYTHONPATH": ""}, capture_output=True, text=True,
                          timeout=HANG_GUARD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = np.load(tmp_path / "out.npz", allow_pickle=True)  # class names are bytes objects
    manifest = exported_model.load_manifest(exported)
    for i in range(6):
        ids = out["bytes_class_ids"][i]
        np.testing.assert_allclose(out["bytes_probabilities"][i], probabilities[i][ids], atol=1e-5)
        np.testing.assert_array_equal(ids, np.argsort(-probabilities[i], kind="stable")[:10])
        assert [n.decode() for n in out["bytes_class_names"][i]] == [manifest["classes"][k]["name"] for k in ids]
    assert out["bytes_probabilities"].sum(1) == pytest.approx(1.0, abs=1e-5)  # softmax once, top-k = all
    by_id = [np.empty(10), np.empty(10)]
    for target, kind in zip(by_id, ("pixels", "bytes")):
        target[out[f"{kind}_class_ids"][0]] = out[f"{kind}_probabilities"][0]
    # decode_jpeg then crop (pixels) differs from decode_and_crop_jpeg (bytes) at the crop edges' chroma
    np.testing.assert_allclose(by_id[0], by_id[1], atol=2e-3)
    assert manifest["arch"] == TEST_ARCH and manifest["image_size"] == 32 and manifest["label_offset"] == 1
    assert manifest["source"]["weights"] == "ema" and manifest["onnx"] == "model.onnx"
    from effnet.formats import trained_run

    weights = sum(v.numpy().nbytes for v in trained_run.load_model(run / "run", "ema").weights)
    assert (exported / "model.onnx").stat().st_size > weights  # the weights are in the file
    assert not list(run.glob(".export.tmp-*"))


def test_an_export_missing_or_cutting_short_its_variables_is_named_by_infer_and_benchmark(run, exported, tmp_path):
    damaged = tmp_path / "export"
    shutil.copytree(exported, damaged)
    variables = damaged / "saved_model" / "variables"
    data = next(variables.glob("variables.data-*"))
    data.write_bytes(data.read_bytes()[:1000])
    named = f"{damaged / 'saved_model'}: incomplete or damaged SavedModel"
    proc = run_cli("infer", "--model", str(damaged), "--images", str(run / "demo" / "val"), "--output",
                   str(tmp_path / "p.csv"))
    assert proc.returncode == 2 and named in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "p.csv").exists()
    shutil.rmtree(variables)
    proc = run_cli("benchmark", "inference", "--model", str(run / "run"), "--export", str(damaged), "--output",
                   str(tmp_path / "bench"), "--set", "benchmark.inference_max_batch=1", "--set",
                   "benchmark.precisions=[fp32]", "--set", f"model.arch={TEST_ARCH}")
    assert proc.returncode == 2 and named in proc.stderr and "variables" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "bench" / "inference.json").exists()  # its log says how far it got


def test_infer_matches_evaluate_and_reports_bad_files(run, exported, ema_metrics, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(run / "demo" / "val", images)
    (images / "notes.txt").write_text("not an image")
    (images / "broken.jpg").write_bytes((run / "demo" / "val" / "star" / "star_0000.jpg").read_bytes()[:600])
    from PIL import Image

    Image.open(run / "demo" / "val" / "ring" / "ring_0001.jpg").convert("CMYK").save(images / "cmyk.jpg")
    Image.open(run / "demo" / "val" / "ring" / "ring_0001.jpg").convert("RGBA").save(images / "alpha.png")
    proc = run_cli("infer", "--model", str(exported), "--images", str(images), "--output", str(tmp_path / "p.csv"),
                   "--top-k", "3", "--batch-size", "16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {Path(r["path"]).relative_to(images).as_posix(): r for r in csv.DictReader(open(tmp_path / "p.csv"))}
    assert len(rows) == 50 + 4
    assert rows["notes.txt"]["error"].startswith("not a readable image") and rows["notes.txt"]["class_id_1"] == ""
    assert "truncated" in rows["broken.jpg"]["error"].lower()
    assert rows["cmyk.jpg"]["error"] == "" and rows["alpha.png"]["error"] == ""
    val = [r for name, r in rows.items() if "/" in name]
    top1 = np.mean([r["class_name_1"] == Path(r["path"]).parent.name for r in val])
    assert top1 == ema_metrics["top1"]
    assert all(float(r["probability_1"]) >= float(r["probability_2"]) >= float(r["probability_3"]) for r in val)

    proc = run_cli("infer", "--model", str(exported), "--images", str(images / "ring"), "--output",
                   str(tmp_path / "p.jsonl"))
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(lines) == VAL_PER_CLASS and all(len(r["class_ids"]) == 1 and r["error"] is None for r in lines)

    (tmp_path / "empty").mkdir()
    proc = run_cli("infer", "--model", str(exported), "--images", str(tmp_path / "empty"), "--output",
                   str(tmp_path / "e.csv"))
    assert proc.returncode == 2 and "no files to predict" in proc.stderr and not (tmp_path / "e.csv").exists()
