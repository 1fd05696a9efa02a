"""The command line lists every stage, and each stage explains every option."""
import argparse
import re

from effnet.cli import build_parser

STAGES = ["doctor", "demo-data", "prepare", "index", "train", "evaluate", "export", "infer", "benchmark", "report"]


def test_help_lists_the_stages_in_pipeline_order(cli):
    out = cli("--help", check=True).stdout
    assert re.findall(r"^    (\S+)\s", out, flags=re.M) == STAGES


def test_every_option_of_every_stage_has_help():
    (subparsers,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert list(subparsers.choices) == STAGES
    for stage, parser in subparsers.choices.items():
        assert parser.description, stage
        for action in parser._actions:
            assert action.help, f"{stage} {action.option_strings} has no help text"


def test_stage_help_runs(cli):
    out = cli("prepare", "--help", check=True).stdout
    assert "--skip-corrupt" in out and "1-based" in out


def test_unknown_stage_is_rejected(cli):
    proc = cli("train-everything")
    assert proc.returncode == 2 and "invalid choice: 'train-everything'" in proc.stderr


def test_every_stage_logs_its_provenance_first(cli, tmp_path):
    import hashlib
    import json
    import subprocess

    proc = cli("demo-data", "--output", str(tmp_path / "demo"), "--train-per-class", "1",
               env={"SLURM_JOB_ID": "4242", "EFFNET_CONTAINER_IMAGE": "nvcr.io#nvidia/tensorflow:25.02-tf2-py3"},
               check=True)
    first = proc.stderr.splitlines()[0]
    assert first.startswith("provenance ")
    record = json.loads(first.removeprefix("provenance "))
    assert record["command"].endswith(f"-m effnet demo-data --output {tmp_path / 'demo'} --train-per-class 1")
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert record["git_commit"] == head and record["slurm_job_id"] == "4242"
    assert record["container"] == {"EFFNET_CONTAINER_IMAGE": "nvcr.io#nvidia/tensorflow:25.02-tf2-py3"}
    assert record["config_sha256"] is None
    config = tmp_path / "c.yaml"
    config.write_text("run_dir: x\n")
    proc = cli("train", "--config", str(config), "--data", str(tmp_path), "--output", str(tmp_path / "o"),
               "--set", "train.epochs=1")
    record = json.loads(proc.stderr.splitlines()[0].removeprefix("provenance "))
    assert record["config_sha256"] == hashlib.sha256(b"run_dir: x\n\0train.epochs=1").hexdigest()
