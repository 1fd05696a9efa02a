#!/usr/bin/env bash
# GPU smoke check for a lent GPU machine (about 5 minutes; not part of the CPU test suite):
# doctor, DALI decoding on the GPU, EfficientNet-B0 224 px AMP + XLA training throughput on one GPU
# after warm-up, and a 2-step resume. Figures go to stdout and to $OUT (or /tmp/effnet-gpu-smoke).
# Reference: 2549-3454 img/s for B0 AMP on one A100 80GB (DeepLearningExamples tables).
# Usage: EFFNET_TF=tensorflow ./setup.sh env && tests/gpu/smoke.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH" TF_CPP_MIN_LOG_LEVEL=2
work=${OUT:-/tmp/effnet-gpu-smoke}
mkdir -p "$work"

echo "== doctor"
python -m effnet doctor --cluster | tee "$work/doctor.txt" || true

echo "== data: demo images, shards"
python -m effnet demo-data --output "$work/demo" --train-per-class 60 --val-per-class 10 >/dev/null
python -m effnet prepare --source folders --input "$work/demo" --output "$work/rec" --train-shards 2 \
  --val-shards 1 > /dev/null

echo "== DALI decoding and augmentation on the GPU"
python - "$work/rec" <<'PY' | tee "$work/dali.txt"
import sys, time
import tensorflow as tf
from effnet.data import build_dataset
from effnet.ranks import rank_gpu
device = rank_gpu()
assert device is not None, "no GPU visible to TensorFlow"
tf.config.experimental.set_memory_growth(tf.config.list_physical_devices("GPU")[device.cuda_index], True)
batches = build_dataset(sys.argv[1], "train", backend="dali", batch_size=64, image_size=224, epochs=3,
                        augment="autoaugment")
start, n = time.perf_counter(), 0
for images, labels in batches:
    n += int(images.shape[0])
print(f"dali on GPU {device}: {n} images, {n / (time.perf_counter() - start):.0f} img/s "
      f"(tiny set; includes the pipeline's start), device of the batch: {images.device}")
PY

echo "== B0 224 px training step, AMP + XLA, 1 GPU (warm-up excluded)"
python -m effnet benchmark train --data "$work/rec" --output "$work/bench" --set model.image_size=224 \
  --set "benchmark.precisions=[amp]" --set "benchmark.train_batch_sizes=[${BATCH:-256}]" --set "benchmark.ranks=[1]" \
  --set benchmark.warmup_steps=${WARMUP:-20} --set benchmark.steps=${STEPS:-60} --set train.xla=true \
  | tee "$work/train_step.txt"

echo "== 2-step resume"
run="$work/run"
rm -rf "$run"
common=(--data "$work/rec" --output "$run" --set model.image_size=224 --set train.batch_size=32
        --set train.steps_per_epoch=2 --set train.log_every=1)
python -m effnet train "${common[@]}" --set train.epochs=1 > "$work/resume1.txt"
python -m effnet train "${common[@]}" --set train.epochs=2 > "$work/resume2.txt"
grep -q "resumed_from_step: 2" "$work/resume2.txt" && grep -q '"steps": 4' "$run/train_summary.json"
echo "resume: ok (epoch 1 resumed from step 2, 4 steps in all)"
