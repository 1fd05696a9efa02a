"""What can be checked of the production image without pulling its NGC base: its install list and context."""
import re
import tomllib

from conftest import REPO

# Shipped by the NGC TensorFlow image (with TF, Horovod and the DALI TF plugin), kept as it is.
FROM_BASE_IMAGE = {"nvidia-dali-cuda120"}


def test_the_image_installs_every_project_dependency():
    dockerfile = (REPO / "Dockerfile").read_text()
    pip_lines = " ".join(re.findall(r"pip install[^&]*", dockerfile.replace("\\\n", " ")))
    installed = {re.split(r"[<>=\[]", token.strip('"'))[0].lower() for token in pip_lines.split()}
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = {re.split(r"[<>=\[ ]", d)[0].lower() for d in declared} - FROM_BASE_IMAGE
    assert wanted - installed == set()


def test_local_state_stays_out_of_the_build_context():
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".venv/", "results/", ".snakemake/", ".git/"} <= ignored
