# Production image: NVIDIA's NGC TensorFlow container plus only what it lacks. Used through Pyxis
# (`srun --container-image=...`) by the SLURM profile.
#
# 25.02 is the last NGC TensorFlow release ("After the 25.02 release, NVIDIA Optimized TensorFlow
# containers will no longer be released": TensorFlow release notes, rel-25-02). As reported for it
# (second-hand; NVIDIA's release-notes page was not reachable from here): TensorFlow 2.17.0, Python 3.12,
# Ubuntu 24.04, CUDA 12.8, NCCL 2.25, OpenMPI 4.1, Horovod 0.28.1 and DALI 1.46 preinstalled. Our code
# needs Keras 3 (`import keras`, Keras 3 variables' `.value` for Horovod): TF 2.16+ defaults to it, and
# TF_USE_LEGACY_KERAS=0 keeps it so; `doctor` fails on a Keras 2 tf.keras and the build's last step runs
# one real Horovod training step, so an image where this does not hold is never produced.
FROM nvcr.io/nvidia/tensorflow:25.02-tf2-py3

ENV TF_USE_LEGACY_KERAS=0
WORKDIR /workspace/effnet

# Keep the container's own TF, Keras, protobuf, numpy, Horovod and DALI: install the rest around them.
COPY pyproject.toml README.md ./
COPY effnet effnet
RUN pip freeze | grep -iE '^(tensorflow|keras|protobuf|numpy|horovod|nvidia-dali)' > /tmp/keep.txt \
 && pip install --no-cache-dir -c /tmp/keep.txt \
      "snakemake>=9,<10" "snakemake-executor-plugin-slurm==2.6.1" tensorflow-datasets importlib_resources \
      jsonschema pyyaml tqdm pillow google-crc32c pygments matplotlib tf2onnx onnxruntime tabulate markdown \
 && pip install --no-cache-dir --no-deps -e .

COPY . .
# The stack as installed, and one real training step (B0, Horovod's tape, the optimizer) on CPU.
RUN python -m effnet doctor --train-step
