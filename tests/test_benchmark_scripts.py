"""The comparisons with peers (benchmarks/peers, outside the package) at toy size, so that none of them rots: each
runs from the checkout's root as README tells and prints a figure for every side it compares. The figures
themselves are benchmarks, not checked here. accuracy and finetune read scikit-learn's digits and Debian's
Fashion-MNIST, which `./setup.sh test` installs."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import HANG_GUARD, REPO

# comparison -> (toy-size options, the sides that must each print a figure)
COMPARISONS = {
    "data": (["--images", "40", "--shards", "2", "--workers", "1"],
             ["cat (copy, physical limit)", "prepare (decode-check, write)", "index", "tfrecord2idx"]),
    "reader": (["--records", "64", "--record-kb", "4", "--batch-size", "16", "--rounds", "1"],
               ["ours: planned order + DALI reader", "DALI reader, random_shuffle",
                "before: tf.data -> DALI per sample"]),
    "input": (["--images", "16", "--image-size", "32", "--batch-size", "8", "--rounds", "1"],
              ["baseline tf.data", "tf.data plain", "tf.data + AutoAugment", "DALI CPU plain"]),
    "serve": (["--image-size", "32", "--batch-size", "4", "--rounds", "1", "--repeats", "2", "--images", "8",
               "--jpeg-size", "48"],
              ["export serve_pixels", "keras predict_on_batch", "keras model.predict",
               "infer on 8 JPEGs of 48 px, batch 4:"]),
    "step": (["--image-size", "32", "--batch-size", "4", "--rounds", "1", "--steps", "1"],
             ["effnet forward+backward", "keras forward+backward", "effnet train step", "keras model.fit"]),
    "accuracy": (["--datasets", "digits", "--seeds", "0", "--epochs", "1", "--image-size", "32", "--batch-size", "32",
                  "--per-class", "12", "--sides", "ours", "keras-flip-shift-bn0.9", "--lr-factors", "1", "2"],
                 ["pick digits  ours  lr", "pick digits  keras-flip-shift-bn0.9  lr", "ours (lr",
                  "keras-flip-shift-bn0.9 (lr"]),
    "finetune": (["--seeds", "0", "--epochs", "1", "--pretrain-epochs", "1", "--source-per-class", "10",
                  "--target-per-class", "4", "--image-size", "32", "--batch-size", "8"],
                 ["from scratch (demo recipe)", "fine-tuned (+ finetune.yaml's keys)"]),
    "stagewise": (["--seeds", "0", "--epochs", "2", "--stages", "2", "--image-size", "40", "--base-size", "32",
                   "--per-class", "6", "--batch-size", "8", "--arch", "efficientnet-test"], ["fixed", "stagewise"]),
}


@pytest.mark.slow(minutes=2)
@pytest.mark.parametrize("comparison", COMPARISONS)
def test_each_comparison_prints_a_figure_for_every_side(comparison, tmp_path):
    options, sides = COMPARISONS[comparison]
    workdir = [] if comparison in ("data", "serve") else ["--workdir", str(tmp_path)]  # these keep no data
    proc = subprocess.run([sys.executable, "-m", "benchmarks.peers", comparison, *options, *workdir], cwd=REPO,
                          capture_output=True, text=True, timeout=HANG_GUARD,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for side in sides:  # the side's row, then a number on it
        assert re.search(rf"^\s*{re.escape(side)}\s.*?\d", proc.stdout, re.M), (side, proc.stdout)


@pytest.mark.slow(minutes=1)
def test_the_memory_benchmark_prints_each_stages_peak_and_the_training_fit():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--arch", "efficientnet-test", "--sizes", "32",
                           "40", "--batches", "4", "--steps", "1", "--per-class", "4"], cwd=REPO, capture_output=True,
                          text=True, timeout=HANG_GUARD, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    peaks = json.loads(proc.stdout.splitlines()[-1])["peak_mib"]
    assert set(peaks) == {"demo-data", "prepare (largest process, 1 worker)", "index", "train 32 px, batch 4 (CPU)",
                          "train 40 px, batch 4 (CPU)", "evaluate", "export", "infer", "benchmark inference"}
    assert all(20 < mib < 20000 for mib in peaks.values()), peaks  # a process's peak, in MiB
    assert re.search(r"^train \(CPU\) fit: \d+ MiB \+ -?\d+\.\d+ KiB x batch x size\^2$", proc.stdout, re.M)
