"""The Snakemake workflow runs the data stages end to end on the demo dataset, and plans without running."""
import json
import os
import subprocess
import sys

from conftest import REPO


def snakemake(*args, timeout=600):
    """Run snakemake as a user with the virtual environment activated (rules call `python -m effnet`)."""
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_dry_run_plans_every_stage(tmp_path):
    proc = snakemake("-n", "all", "--config", f"run_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    for rule in ("demo_data", "prepare", "index", "train", "all"):
        assert f"rule {rule}:" in proc.stdout + proc.stderr
    assert not any(tmp_path.iterdir())  # nothing ran


def test_demo_pipeline_runs_and_a_rerun_has_nothing_to_do(tmp_path):
    short = tmp_path / "short.yaml"  # the demo config, with two training steps
    short.write_text(f"run_dir: {tmp_path}\ntrain: {{epochs: 1, steps_per_epoch: 2}}\n")
    proc = snakemake("all", "--configfile", str(short))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "tfrecords/manifest.json").read_text())
    assert manifest["num_classes"] == 10
    assert manifest["splits"]["train"]["examples"] == 1000 and manifest["splits"]["validation"]["examples"] == 250
    summary = json.loads((tmp_path / "dali-index/index.json").read_text())
    assert sum(s["records"] for s in summary["shards"].values()) == 1250
    train = json.loads((tmp_path / "train/train_summary.json").read_text())
    assert (train["steps"], train["num_classes"], train["image_size"]) == (2, 10, 32)
    assert (tmp_path / "train/model.keras").exists() and (tmp_path / "train/ema.keras").exists()
    again = snakemake("all", "--configfile", str(short))
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
