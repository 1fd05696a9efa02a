"""The Snakemake workflow runs the data stages end to end on the demo dataset, and plans without running."""
import csv
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import HANG_GUARD, REPO, SIDE_BY_SIDE, TEST_ARCH

from effnet.core import layout
from effnet.formats import benchmark_results, exported_model, trained_run
from effnet.formats.dllog import read_records
from effnet.formats.records import load_manifest
from effnet.stages.report import plots


def snakemake(*args):
    """Run snakemake as a user with the virtual environment activated (rules call `python -m effnet`)."""
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "snakemake", SIDE_BY_SIDE, "--cores", "2", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=HANG_GUARD)


STAGES = ("demo_data", "prepare", "index", "train", "evaluate", "export", "infer", "benchmark_train",
          "benchmark_inference", "report", "all")
# The benchmarks at their smallest: one training row and one inference batch size per model (amp is skipped on a
# CPU without native bfloat16; more batch sizes and 2 ranks: test_slurm and test_report).
TINY_BENCHMARK = ("benchmark: {precisions: [fp32, amp], train_batch_sizes: [4], ranks: [1], warmup_steps: 1, "
                  "steps: 3, inference_max_batch: 1, inference_warmup: 1, inference_steps: 3}\n")


def test_dry_run_plans_every_stage(tmp_path):
    proc = snakemake("-n", "all", "--config", f"run_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    for rule in STAGES:
        assert f"rule {rule}:" in proc.stdout + proc.stderr
    assert not any(tmp_path.iterdir())  # nothing ran


def test_a_preset_means_what_it_says_and_an_override_file_changes_one_nested_key(tmp_path):
    override = tmp_path / "override.yaml"
    override.write_text(f"run_dir: {tmp_path}/run\ndata: {{input: {tmp_path}}}\ntrain: {{epochs: 3}}\n")
    proc = snakemake("all", "-n", "-p", "--configfile", "config/imagenet-b0.yaml", str(override))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert f"--input {tmp_path} " in out and "--train-shards 1024 --val-shards 128" in out  # not the demo's 4/2
    train = next(line for line in out.splitlines() if "python -m effnet train" in line)
    assert "image_size: null" in train and "arch: efficientnet-b0" in train and "batch_size: 1024" in train
    assert "epochs: 3," in train and "lr_init: 0.005" in train and "demo_images_per_class: 40" in train
    assert "rule infer:" not in out  # a tfrecords source has no image files to predict


def test_the_v2_s_preset_plans_a_stage_wise_run(tmp_path):
    override = tmp_path / "override.yaml"
    override.write_text(f"run_dir: {tmp_path}/run\ndata: {{input: {tmp_path}}}\n")
    proc = snakemake("all", "-n", "-p", "--configfile", "config/imagenet-v2-s.yaml", str(override))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    train = next(line for line in out.splitlines() if "python -m effnet train" in line)
    for key in ("arch: efficientnetv2-s", "image_size: 300", "stages: 4", "base_image_size: 128",
                "randaug_magnitude: 15", "base_randaug_magnitude: 5", "batch_size: 460"):
        assert key in train, key
    assert not any(tmp_path.glob("run/*"))  # planned, nothing ran


def test_the_finetune_preset_plans_its_weights_file_into_train_and_names_a_missing_one(tmp_path):
    weights = tmp_path / "efficientnetb0_notop.h5"
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
    override = tmp_path / "mine.yaml"
    override.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), "data": {"input": str(tmp_path / "images")},
                                        "train": {"init_from": str(weights)}}))
    missing = snakemake("all", "-n", "--configfile", "config/finetune.yaml", str(override))
    assert missing.returncode != 0 and str(weights) in missing.stdout + missing.stderr
    weights.write_bytes(b"")  # planning reads no weights
    proc = snakemake("all", "-n", "-p", "--configfile", "config/finetune.yaml", str(override))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert re.search(rf"rule train:\n\s+input: .*{re.escape(str(weights))}", out)
    train = next(line for line in out.splitlines() if "python -m effnet train" in line)
    assert f"init_from: {weights}" in train and "freeze_epochs: 1" in train and "lr_init: 0.016" in train


@pytest.mark.slow(minutes=3)
def test_demo_pipeline_runs_and_a_rerun_has_nothing_to_do(tmp_path):
    # A run_dir that every rule must quote: a space splits an unquoted argument, and the rest would run a command.
    run = tmp_path / "run dir;touch injected;#"
    # over the demo config: two training steps of the test-sized model in the GPU recipe's float16 (loss scaling)
    short = tmp_path / "short.yaml"
    short.write_text(yaml.safe_dump({"run_dir": str(run), "data": {"demo_images_per_class": 20},  # 200 + 50 images
                                     "model": {"arch": TEST_ARCH},
                                     "train": {"epochs": 1, "steps_per_epoch": 2, "amp": "float16"}})
                     + TINY_BENCHMARK)
    configs = ("--configfile", "config/config.yaml", str(short))
    proc = snakemake("all", *configs)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not (REPO / "injected").exists()  # no rule ran the rest of the path as a command
    manifest = load_manifest(run / "tfrecords")
    assert manifest["num_classes"] == 10
    assert manifest["splits"]["train"]["examples"] == 200 and manifest["splits"]["validation"]["examples"] == 50
    summary = json.loads((run / "dali-index/index.json").read_text())
    assert sum(s["records"] for s in summary["shards"].values()) == 250
    train = trained_run.load_summary(run / "train")
    assert (train["steps"], train["num_classes"], train["image_size"]) == (2, 10, 32)
    assert train["precision"] == "mixed_float16"  # and evaluate, export, infer take the float16-trained model
    assert (run / "train/model.keras").exists() and (run / "train/ema.keras").exists()
    metrics = json.loads((run / "evaluate/metrics.json").read_text())
    assert metrics["examples"] == 50 and metrics["weights"] == "ema"
    assert exported_model.load_manifest(run / "export")["top_k"] == 5
    with open(run / "infer/predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 50 and not any(r["error"] for r in rows)
    assert sum(r["class_name_1"] == r["path"].split("/")[-2] for r in rows) == round(metrics["top1"] * 50)
    check_benchmarks_and_report(run)
    collected = snakemake("--report", str(tmp_path / "snakemake-report.html"), *configs)
    assert collected.returncode == 0, collected.stderr[-3000:]
    html = (tmp_path / "snakemake-report.html").read_text()
    assert all(name in html for name in (*layout.REPORT_PLOTS, "report.html", "confusion.png"))
    again = snakemake("all", *configs)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    assert sorted(p.name for p in (run / "logs").glob("train.log*")) == ["train.log", "train.log.1"]
    assert "train_summary.json" in (run / "logs/train.log.1").read_text()  # what the stage printed

    def planned(*args):
        proc = snakemake("all", "-n", *args)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return set(job_stats(proc.stdout))

    assert planned(*configs, "--forcerun", "index", "--until", "index") == {"index", "total"}
    # A key only evaluate uses reruns evaluate alone; a training key reruns train and what follows it.
    changed = tmp_path / "changed.yaml"
    changed.write_text("eval: {warmup_batches: 1}\n")
    assert planned(*configs, str(changed)) == {"evaluate", "report", "all", "total"}
    changed.write_text("train: {label_smoothing: 0.2}\n")
    assert planned(*configs, str(changed)) == {"train", "evaluate", "export", "infer", "benchmark_train",
                                               "benchmark_inference", "report", "all", "total"}
    # Fine-tuning from a copy of this run: its summary is an input of train, which reruns when it changes (a
    # touch alone does not: Snakemake compares the checksums of small files).
    pretrained = tmp_path / "pretrained"
    shutil.copytree(run / "train", pretrained)
    changed.write_text(yaml.safe_dump({"train": {"init_from": str(pretrained), "freeze_epochs": 1}}))
    plan = snakemake("train", "-n", *configs, str(changed))
    assert re.search(rf"rule train:\n\s+input: .*{re.escape(str(pretrained / 'train_summary.json'))}", plan.stdout)
    evaluated = (run / "evaluate/metrics.json").stat().st_mtime_ns
    tuned = snakemake("evaluate", *configs, str(changed))  # and evaluate takes the fine-tuned run as any other
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    assert (run / "evaluate/metrics.json").stat().st_mtime_ns > evaluated
    assert json.loads((run / "evaluate/metrics.json").read_text())["examples"] == 50
    records = read_records(run / "train/train.dllog.json")
    start = next(r["data"] for r in records if "init_kind" in r.get("data", {}))
    assert (start["init_kind"], start["init_layers_reinitialised"]) == ("run", [])
    assert not {"train", "evaluate"} & planned(*configs, str(changed))
    summary = trained_run.load_summary(pretrained)  # new weights under the same path
    (pretrained / layout.TRAIN_SUMMARY).write_text(json.dumps({**summary, "steps": summary["steps"] + 1}))
    assert planned(*configs, str(changed)) >= {"train", "evaluate", "export", "infer", "report"}


def job_stats(output: str) -> dict[str, int]:
    """The jobs Snakemake's "Job stats" table counts (of the first table in ``output``)."""
    table = output.split("Job stats:")[1].split("\n\n")[0]  # job, count; ends at a blank line
    return {line.split()[0]: int(line.split()[1]) for line in table.strip().splitlines()[2:]}


def test_a_batch_plans_every_run_and_a_bad_run_fails_before_anything_runs(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), "data": {"input": str(tmp_path)},
                                     "sweep": {"model.arch": ["efficientnet-b0", "efficientnet-b4"],
                                               "train.seed": [0, 1]}}))
    proc = snakemake("all", "-n", "--configfile", "config/imagenet-b0.yaml", str(sweep))
    assert proc.returncode == 0, proc.stderr[-3000:]
    planned = job_stats(proc.stdout)
    assert (planned["prepare"], planned["index"], planned["train"], planned["compare_runs"]) == (1, 1, 4, 1)
    assert "wildcards: run=arch-efficientnet-b4_seed-1" in proc.stdout
    sweep.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), "data": {"input": str(tmp_path)},
                                     "runs": {"b0": {}, "b4": {"model": {"arch": "efficientnet-b4"},
                                                               "data": {"train_shards": 2048}}}}))
    proc = snakemake("all", "-n", "-p", "--configfile", "config/imagenet-b0.yaml", str(sweep))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert job_stats(proc.stdout)["prepare"] == 2  # other data, other records
    prepared = {re.search(r"--output (\S+)", line)[1] for line in proc.stdout.splitlines()
                if "python -m effnet prepare" in line}
    assert len(prepared) == 2 and all("/run/data/tfrecords-" in path for path in prepared), prepared
    sweep.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), "data": {"input": str(tmp_path)},
                                     "runs": {"b0": {}, "b4": {"train": {"lr_init": "high"}}}}))
    proc = snakemake("all", "-n", "--configfile", "config/imagenet-b0.yaml", str(sweep))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "runs.b4: invalid configuration:\n  train.lr_init: 'high'" in out
    assert not (tmp_path / "run").exists()


@pytest.mark.slow(minutes=4)
def test_two_seeds_share_their_data_stages_and_one_report_compares_them(tmp_path):
    run = tmp_path / "batch"
    base = {"run_dir": str(run), "data": {"demo_images_per_class": 10}, "model": {"arch": TEST_ARCH},
            "train": {"epochs": 1, "steps_per_epoch": 2}}
    batch = tmp_path / "batch.yaml"
    batch.write_text(yaml.safe_dump({**base, "sweep": {"train.seed": [0, 1]}}) + TINY_BENCHMARK)
    configs = ("--configfile", "config/config.yaml", str(batch))
    proc = snakemake("all", *configs)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ran = job_stats(proc.stdout + proc.stderr)
    assert (ran["demo_data"], ran["prepare"], ran["index"], ran["train"], ran["report"], ran["compare_runs"]) == (
        1, 1, 1, 2, 2, 1)
    assert [p.name for p in (run / "data").iterdir()] == [next((run / "data").iterdir()).name]  # one set of records
    seeds = [trained_run.load_summary(run / f"runs/seed-{seed}/train") for seed in (0, 1)]
    assert seeds[0]["steps"] == seeds[1]["steps"] == 2
    report = (run / "report/report.md").read_text()
    for seed in (0, 1):
        assert re.search(rf"^\| seed-{seed} +\| {TEST_ARCH} +\| train\.seed={seed} +\| \d+\.\d\d% ", report, re.M)
    assert re.search(r"^\| mean \+- sd of 2 seeds +\| \S+ +\| seed-0, seed-1 +\| \d+\.\d\d% \+- \d+\.\d\d pts",
                     report, re.M), report
    top1 = {seed: json.loads((run / f"runs/seed-{seed}/evaluate/metrics.json").read_text())["top1"] for seed in (0, 1)}
    assert f"Best: **seed-{max(top1, key=top1.get)}**" in report
    assert set(plots.read_series(run / "report" / layout.RUNS_PLOT)) == {"seed-0", "seed-1"}
    # The same two runs written out, one with another rate: only that run's stages and the comparison rerun.
    batch.write_text(yaml.safe_dump({**base, "runs": {"seed-0": {"train": {"seed": 0}},
                                                      "seed-1": {"train": {"seed": 1, "lr_init": 0.008}}}})
                     + TINY_BENCHMARK)
    plan = snakemake("all", "-n", *configs)
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert job_stats(plan.stdout) == {"train": 1, "evaluate": 1, "export": 1, "infer": 1, "benchmark_train": 1,
                                      "benchmark_inference": 1, "report": 1, "compare_runs": 1, "all": 1, "total": 9}
    assert "run=seed-0" not in plan.stdout


def check_benchmarks_and_report(run):
    """The benchmarks' tables hold every configured row, their figures are those of their own dllogger
    records and raw timings, and the report shows them."""
    bench = benchmark_results.load(run / "benchmark", "train")
    rows = {(r["precision"], r["batch_size"], r["ranks"]): r for r in bench["rows"]}
    assert set(rows) == {("fp32", 4, 1), ("amp", 4, 1)} and rows[("amp", 4, 1)]["policy"] == "mixed_float16"
    logged = [r["data"] for r in read_records(run / "benchmark/train-1-ranks.dllog.json")
              if r.get("step") == ["train_benchmark"]]
    assert sorted(r["avg_exp_per_second_training"] for r in logged) == sorted(r["img_per_sec"] for r in rows.values())
    for (_, batch, _), row in rows.items():
        assert len(row["step_seconds"]) == 3
        ms = np.asarray(row["step_seconds"]) * 1000
        assert row["step_latency_ms"]["p90"] == pytest.approx(np.percentile(ms, 90))
        assert row["step_latency_ms"]["mean"] == pytest.approx(ms.mean())
        assert row["img_per_sec"] == pytest.approx(batch / ms.mean() * 1000) and row["weak_scaling"] == 1.0
    inference = json.loads((run / "benchmark/inference.json").read_text())
    assert {(r["model"], r["batch_size"]) for r in inference["rows"]} == {("keras", 1), ("export", 1)}
    for row in inference["rows"]:
        ms = np.asarray(row["seconds"]) * 1000
        assert [row["latency_ms"][f"p{p}"] for p in (50, 90, 95, 99)] == pytest.approx(
            list(np.percentile(ms, [50, 90, 95, 99])))
        assert row["img_per_sec"] == pytest.approx(row["batch_size"] / ms.mean() * 1000)
    report = (run / "report/report.md").read_text()
    assert "## Missing" not in report and "| export  | fp32        | 1       |" in report
    # the TensorFlow that ran, once, with the wheel it came from (tensorflow-cpu here)
    assert re.search(r"^\| tensorflow +\| 2\.18\.1 \(tensorflow-cpu\) +\|$", report, re.M), report
    assert "| tensorflow-cpu " not in report
    assert plots.read_series(run / "report" / layout.THROUGHPUT_PLOT)["train"]["fp32"]["batch_size"] == [4]
