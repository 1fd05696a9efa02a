#!/usr/bin/env bash
# Smoke check for a GPU host (about 5 minutes): doctor, DALI decoding and augmentation on the GPU, the
# EfficientNet-B0 224 px AMP + XLA training step on one GPU (the benchmark stage, warm-up excluded), and a
# resume after SIGTERM. Figures go to stdout and to $OUT (default /tmp/effnet-gpu-smoke). Every check fails
# loudly (the script exits non-zero naming it).
# Reference: 2549-3454 img/s for B0 AMP on one A100 80GB (DeepLearningExamples tables).
# Usage: EFFNET_TF=tensorflow ./setup.sh env && tests/gpu/smoke.sh
# SMOKE_MODE=cpu (the default without a GPU; the test suite runs it so) runs every check at tiny sizes (the
# test-sized EfficientNet at 32 px) and names each one it skips because it needs a GPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH" TF_CPP_MIN_LOG_LEVEL=2
work=${OUT:-/tmp/effnet-gpu-smoke}
mkdir -p "$work"
if [ -z "${SMOKE_MODE:-}" ]; then
  SMOKE_MODE=$( (nvidia-smi -L 2>/dev/null | grep -q '^GPU ') && echo gpu || echo cpu)
fi
if [ "$SMOKE_MODE" = gpu ]; then
  arch=efficientnet-b0 size=224 batch=${BATCH:-256} warmup=${WARMUP:-20} steps=${STEPS:-60} xla=true
  train_batch=32 per_class=60
else
  arch=efficientnet-test size=32 batch=4 warmup=1 steps=2 xla=false train_batch=8 per_class=6
fi
fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "skipped (needs a GPU): $*"; }
echo "smoke mode: $SMOKE_MODE"

echo "== doctor"
python -m effnet doctor > "$work/doctor.txt" || { cat "$work/doctor.txt"; fail "doctor: a required component"; }
grep "^ok  \|^warn" "$work/doctor.txt"

echo "== data: demo images, shards"
python -m effnet demo-data --output "$work/demo" --train-per-class $per_class --val-per-class 2 > /dev/null
python -m effnet prepare --source folders --input "$work/demo" --output "$work/rec" --train-shards 2 \
  --val-shards 1 > /dev/null
python -m effnet index --tfrecords "$work/rec" --output "$work/dali-index" > /dev/null

echo "== DALI decoding and augmentation on the GPU"
if [ "$SMOKE_MODE" = gpu ]; then
  python - "$work/rec" <<'PY' | tee "$work/dali.txt"
import sys, time
import tensorflow as tf
from effnet.data import build_dataset
from effnet.core.ranks import rank_gpu
gpu = rank_gpu()
assert gpu is not None, "no GPU visible to TensorFlow"
tf.config.experimental.set_memory_growth(tf.config.list_physical_devices("GPU")[gpu.cuda_index], True)
batches = build_dataset(sys.argv[1], "train", backend="dali", batch_size=64, image_size=224, epochs=3,
                        augment="autoaugment")
start, n = time.perf_counter(), 0
for images, labels in batches:
    n += int(images.shape[0])
assert images.device.endswith("GPU:0") and labels.device.endswith("GPU:0"), (images.device, labels.device)
print(f"dali on {gpu}: {n} images, {n / (time.perf_counter() - start):.0f} img/s "
      f"(tiny set; includes the pipeline's start), batches on {images.device}")
PY
else
  skip "DALI decoding and augmentation on the GPU (the suite runs the same pipeline in DALI's CPU mode)"
fi

echo "== $arch ${size} px training step, AMP (float16), XLA ${xla}, 1 rank (warm-up excluded)"
[ "$SMOKE_MODE" = gpu ] || skip "XLA on a GPU, TF32, the img/s figure (float16 runs on the CPU, slowly)"
python -m effnet benchmark train --data "$work/rec" --output "$work/bench" --set model.arch=$arch \
  --set model.image_size=$size \
  --set "benchmark.precisions=[amp]" --set "benchmark.train_batch_sizes=[$batch]" --set "benchmark.ranks=[1]" \
  --set benchmark.warmup_steps=$warmup --set benchmark.steps=$steps --set train.xla=$xla --set train.amp=float16 \
  > "$work/train_step.txt" || { tail -20 "$work/train_step.txt"; fail "benchmark train"; }
python - "$work/bench/train.json" $arch <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
assert len(rows) == 1 and rows[0]["policy"] == "mixed_float16" and rows[0]["img_per_sec"] > 0, rows
print(f"{sys.argv[2]} step: {rows[0]['img_per_sec']:.1f} img/s on {rows[0]['device']} ({rows[0]['policy']}, XLA {rows[0]['xla']})")
PY

echo "== resume after SIGTERM"
run="$work/run"
rm -rf "$run"
command=(python -m effnet train --data "$work/rec" --output "$run" --set model.arch=$arch --set model.image_size=$size
         --set train.batch_size=$train_batch --set train.epochs=2 --set train.steps_per_epoch=2
         --set train.log_every=1)
"${command[@]}" > "$work/resume1.txt" 2>&1 &
pid=$!
until [ -e "$run/train.dllog.json" ] || ! kill -0 $pid 2>/dev/null; do sleep 0.1; done
kill -TERM $pid 2>/dev/null || fail "resume: training ended before it could be signalled"
status=0; wait $pid || status=$?
[ $status = 75 ] || { tail -20 "$work/resume1.txt"; fail "resume: a signalled run exits 75, not $status"; }
"${command[@]}" > "$work/resume2.txt" 2>&1 || { tail -20 "$work/resume2.txt"; fail "resume: the rerun"; }
python - "$run/train_summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
assert s["steps"] == 4 and 1 <= (s["resumed_from_step"] or 0) < 4, s
print(f"resume: ok (stopped by SIGTERM, exit 75, resumed from step {s['resumed_from_step']}, 4 steps in all)")
PY
echo "smoke: all checks passed ($SMOKE_MODE mode)"
