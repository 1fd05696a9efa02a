"""What can be checked of the production image without building it (no CUDA base image or GPU here): that it
installs the lock CI tests, through the same setup.sh, for the Python CI runs, and its build context."""
import re
import sys

from conftest import REPO

# The CUDA release TensorFlow 2.18's GPU wheel was built and tested with (tensorflow.org/install/source#gpu:
# tensorflow-2.18.0, cuDNN 9.3, CUDA 12.5); Horovod's NCCL build in the image compiles against it.
TF_CUDA = "12.5"


def test_the_image_installs_the_lock_ci_tests_for_the_python_ci_runs():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(rf"^FROM nvidia/cuda:{re.escape(TF_CUDA)}\.\d+-devel-", dockerfile, re.M)
    (install,) = re.findall(r"^RUN (.*\./setup\.sh.*)$", dockerfile, re.M)
    assert install.split() == [f"PYTHON=python{sys.version_info.major}.{sys.version_info.minor}",
                               "EFFNET_TF=tensorflow", "EFFNET_HOROVOD=gpu", "./setup.sh", "env"]
    assert "pip install" not in dockerfile  # nothing beside the lock
    assert dockerfile.rstrip().endswith("RUN python -m effnet doctor --train-step")
    for preset in ("imagenet-b0", "imagenet-b4", "imagenet-v2-s"):  # the presets run in it
        assert "container_image: /shared/containers/effnet.sqsh" in (REPO / f"config/{preset}.yaml").read_text()
    readme = (REPO / "README.md").read_text()
    assert "enroot import -o /shared/containers/effnet.sqsh dockerd://effnet:latest" in readme


def test_local_state_stays_out_of_the_build_context():
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".venv/", "results/", ".snakemake/", ".git/"} <= ignored
