# Production image: NVIDIA's NGC TensorFlow container (TF 2, Horovod with NCCL/MPI, DALI and its TF
# plugin, CUDA) plus only what it lacks. Used through Pyxis (`srun --container-image=...`) by the SLURM profile.
FROM nvcr.io/nvidia/tensorflow:25.02-tf2-py3

WORKDIR /workspace/effnet

# Keep the container's own TF, protobuf, numpy, Horovod and DALI: install the rest around them.
COPY pyproject.toml README.md ./
COPY effnet effnet
RUN pip freeze | grep -iE '^(tensorflow|keras|protobuf|numpy|horovod|nvidia-dali)' > /tmp/keep.txt \
 && pip install --no-cache-dir -c /tmp/keep.txt \
      "snakemake>=9,<10" "snakemake-executor-plugin-slurm==2.6.1" tensorflow-datasets importlib_resources \
      jsonschema pyyaml tqdm pillow google-crc32c pygments matplotlib tf2onnx onnxruntime \
 && pip install --no-cache-dir --no-deps -e . \
 && python -m effnet doctor

COPY . .
