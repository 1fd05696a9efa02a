# Production image: the stack CI tests, from the one lock (requirements/constraints.txt) and the same setup.sh:
# TensorFlow 2.18.1 (the GPU wheel, with the CUDA 12.5 / cuDNN 9 libraries it was built and tested against),
# Keras 3.15.1, DALI 2.4.0 with its TF plugin compiled against that TF, and Horovod 0.28.1 built here for GPUs:
# NCCL allreduce and both controllers, gloo (cluster.mpi: none) and OpenMPI (srun --mpi=pmix; its PMIx-built
# OpenMPI has no PMI2: Debian's 4.1.4 fails under --mpi=pmi2 and runs under --mpi=pmix, measured).
# Not NGC's TensorFlow image: its last release (25.02) ships TF 2.17.0 and DALI 1.46, versions CI does not test,
# and testing them as well needs a second environment and Horovod build that would take CI past 30 minutes
# (README, "The production image"). Used through Pyxis (`srun --container-image=...`) by the SLURM profile.
FROM nvidia/cuda:12.5.1-devel-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive TF_USE_LEGACY_KERAS=0
# Python as CI runs it (3.11); g++ and the CUDA devel image's nvcc and NCCL headers build Horovod; OpenMPI is
# its MPI controller.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-dev python3.11-venv g++ make git \
      openmpi-bin libopenmpi-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /workspace/effnet
COPY . .
RUN PYTHON=python3.11 EFFNET_TF=tensorflow EFFNET_HOROVOD=gpu ./setup.sh env
ENV PATH=/workspace/effnet/.venv/bin:$PATH
# The stack as installed, and one real training step (B0, Horovod's tape, the optimizer) on CPU.
RUN python -m effnet doctor --train-step
