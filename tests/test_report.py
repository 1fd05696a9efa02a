"""The report: the tables and plots hold the run's own figures, --compare divides the right numbers, published
figures appear only where the hardware matches, and a missing stage output is named instead of failing."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from effnet.core import layout
from effnet.core.timing import latency_ms
from effnet.formats import benchmark_results
from effnet.formats.dllog import DLLogger
from effnet.stages.report import plots, write, write_runs

CPU_ENV = {"host": "h", "cpu": "Some CPU", "cpu_count": 2, "cpus_usable": 2, "gpus": [],
           "versions": {"tensorflow": "2.18.1"}, "container": None}
A100_ENV = {**CPU_ENV, "gpus": [{"name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920, "driver": "550.54"}] * 8}


def _seconds(seed, n=20, scale=0.1):
    return list(np.random.default_rng(seed).uniform(0.5, 1.5, n) * scale)


def make_run(root: Path, speed: float = 1.0, env=CPU_ENV, arch="efficientnet-b0", size=32) -> Path:
    """A run directory with every stage output the report reads; figures scale with ``speed``."""
    train = root / layout.TRAIN
    train.mkdir(parents=True)
    with DLLogger(train / layout.TRAIN_LOG, stream=None) as log:  # two attempts: the second resumes at step 4
        for attempt, steps in ((0, (2, 4, 6)), (1, (6, 8))):
            log.log("PARAMETER", {"world_size": 1, "updates_per_epoch": 4})
            for step in steps:
                log.log((step // 4, step), {"loss": 3.0 - 0.1 * step - 0.01 * attempt, "top1": 0.1 * step,
                                            "lr": 0.01 * step, "img_per_sec": 100.0})
            log.log((2,), {"eval_top1": 0.5 + attempt * 0.1, "eval_loss": 1.0})
    (train / layout.TRAIN_SUMMARY).write_text(json.dumps({
        "arch": arch, "image_size": size, "num_classes": 10, "world_size": 8, "epochs": 2, "steps": 8,
        "precision": "mixed_float16", "eval": {"top1": 0.6, "top5": 0.9}, "img_per_sec": 100.0 * speed}))
    (train / layout.TRAIN_CONFIG).write_text("model: {}\n")
    metrics = root / layout.EVALUATE / layout.EVAL_METRICS
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({"top1": 0.625, "top5": 0.95}))
    bench = root / layout.BENCHMARK
    bench.mkdir()
    train_rows = []
    for precision in ("fp32", "amp"):
        for batch in (16, 32):
            for ranks in (1, 8):
                seconds = _seconds(batch + ranks)
                rate = speed * ranks * batch * (2 if precision == "amp" else 1) / np.mean(seconds)
                train_rows.append({"precision": precision, "batch_size": batch, "ranks": ranks, "img_per_sec": rate,
                                   "step_latency_ms": latency_ms(seconds), "step_seconds": seconds,
                                   "weak_scaling": 0.9 if ranks > 1 else 1.0})
    (bench / layout.BENCHMARK_RESULTS["train"]).write_text(json.dumps({
        "kind": "train", "arch": arch, "image_size": size, "data": "synthetic", "warmup_steps": 5, "steps": 20,
        "method": "m", "rows": train_rows, "skipped": [{"precision": "tf32", "reason": "TF32 needs a GPU"}],
        "environment": env, "config": {}}))
    inference_rows = [{"model": model, "precision": "amp", "batch_size": batch, "image_size": size,
                       "img_per_sec": speed * batch * 10.0, "latency_ms": latency_ms(_seconds(batch)),
                       "seconds": _seconds(batch)} for model in ("keras", "export") for batch in (1, 2, 4, 8)]
    (bench / layout.BENCHMARK_RESULTS["inference"]).write_text(json.dumps({
        "kind": "inference", "warmup_calls": 2, "calls": 20, "method": "m", "rows": inference_rows, "skipped": [],
        "environment": env, "config": {"model": {"arch": arch}}}))
    return root


def _table_rows(markdown: str, heading: str) -> list[list[str]]:
    section = markdown.split(f"## {heading}\n")[1].split("\n#")[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_tables_and_plots_hold_the_runs_figures(tmp_path):
    run = make_run(tmp_path / "run")
    drawn = write(run, tmp_path / "out")
    text = (tmp_path / "out/report.md").read_text()
    html = (tmp_path / "out/report.html").read_text()
    assert "<table>" in html and 'src="throughput.png"' in html

    accuracy = _table_rows(text, "Training accuracy")
    assert accuracy[0][:6] == ["8", "amp", "62.50%", "95.00%", "2", "8"]
    perf = _table_rows(text, "Training performance")
    assert {(r[1], r[2], r[0]) for r in perf} == {(p, b, n) for p in ("fp32", "amp") for b in ("16", "32")
                                                  for n in ("1", "8")}
    inference = _table_rows(text, "Inference performance")
    assert {(r[0], r[2]) for r in inference} == {(m, b) for m in ("keras", "export") for b in ("1", "2", "4", "8")}
    assert "TF32 needs a GPU" in text and "## Missing" not in text
    assert all(r[-1] == "-" for r in perf)  # a CPU: no published figure is comparable

    for name in layout.REPORT_PLOTS:  # valid PNGs whose series are the run's numbers
        with Image.open(tmp_path / "out" / name) as image:
            image.verify()
        assert plots.read_series(tmp_path / "out" / name) == json.loads(json.dumps(drawn[name]))
    training = plots.read_series(tmp_path / "out" / layout.TRAINING_PLOT)
    assert training["epoch"] == [0.5, 1.0, 1.5, 2.0]  # steps 2..8 of 4 per epoch; step 6 logged twice: last wins
    assert training["loss"] == pytest.approx([2.8, 2.6, 2.39, 2.19])
    assert training["eval_epoch"] == [2] and training["eval_top1"] == [0.6]
    assert plots.read_series(tmp_path / "out" / layout.LR_PLOT)["lr"] == pytest.approx([0.02, 0.04, 0.06, 0.08])
    bench = benchmark_results.load(run / layout.BENCHMARK, "train")
    scaling = plots.read_series(tmp_path / "out" / layout.SCALING_PLOT)
    assert scaling["amp 32"]["img_per_sec"] == [r["img_per_sec"] for r in bench["rows"]
                                                if (r["precision"], r["batch_size"]) == ("amp", 32)]
    latency = plots.read_series(tmp_path / "out" / layout.LATENCY_PLOT)
    export_8 = next(r for r in benchmark_results.load(run / layout.BENCHMARK, "inference")["rows"]
                    if (r["model"], r["batch_size"]) == ("export", 8))
    assert latency["export amp"]["p99"][-1] == pytest.approx(np.percentile(np.asarray(export_8["seconds"]) * 1e3, 99))


def test_a_stage_wise_run_shows_its_stages_in_a_table_and_on_the_curves(tmp_path):
    run = make_run(tmp_path / "run")
    stages = [{"index": i, "first_epoch": i, "end_epoch": i + 1, "image_size": size, "mixup_alpha": alpha,
               "cutmix_alpha": 0.0, "randaug_magnitude": magnitude}
              for i, (size, alpha, magnitude) in enumerate(((24, 0.0, 5), (32, 0.2, 10)))]
    train = run / layout.TRAIN
    with DLLogger(train / layout.TRAIN_LOG, stream=None, append=False) as log:
        log.log("PARAMETER", {"world_size": 1, "updates_per_epoch": 4, "stages": stages})
        for step in range(2, 9, 2):
            log.log(((step - 1) // 4, step), {"loss": 1.0, "top1": 0.5, "lr": 0.01, "img_per_sec": 1.0,
                                              "stage": (step - 1) // 4})
    summary = json.loads((train / layout.TRAIN_SUMMARY).read_text())
    (train / layout.TRAIN_SUMMARY).write_text(json.dumps({**summary, "stages": stages}))
    write(run, tmp_path / "out")
    text = (tmp_path / "out/report.md").read_text()
    assert _table_rows(text.replace("### Stages", "## Stages"), "Stages") == [
        ["0", "0", "24 px", "0.00", "0.00", "5"], ["1", "1", "32 px", "0.20", "0.00", "10"]]
    training = plots.read_series(tmp_path / "out" / layout.TRAINING_PLOT)
    assert training["stage"] == [0, 0, 1, 1] and training["stage_starts"] == [1]
    assert plots.read_series(tmp_path / "out" / layout.LR_PLOT)["stage_starts"] == [1]
    plain = write(make_run(tmp_path / "plain"), tmp_path / "plain-out")  # one stage: no table, no marks
    assert "### Stages" not in (tmp_path / "plain-out/report.md").read_text()
    assert plain[layout.TRAINING_PLOT]["stage_starts"] == []


def test_published_figures_appear_beside_ours_on_matching_hardware(tmp_path):
    run = make_run(tmp_path / "run", env=A100_ENV, size=224)
    write(run, tmp_path / "out")
    text = (tmp_path / "out/report.md").read_text()
    perf = {(r[1], r[2], r[0]): r[-1] for r in _table_rows(text, "Training performance")}
    assert perf[("amp", "32", "1")] == "3454 (A100 80GB)" and perf[("amp", "32", "8")] == "20647 (A100 80GB)"
    assert perf[("fp32", "32", "1")] == "-"  # the reference has TF32, not FP32, on A100
    inference = {(r[0], r[2]): r[-1] for r in _table_rows(text, "Inference performance")}
    assert inference[("keras", "1")] == "110.97 img/s, 9.09 ms (A100 80GB)" and inference[("keras", "2")] == "-"
    assert _table_rows(text, "Training accuracy")[0][-1] == "77.59% in 8.5 h (A100 80GB)"
    assert "8 x NVIDIA A100-SXM4-80GB (81920 MiB)" in text


def test_compare_sets_two_runs_side_by_side_with_ratios(tmp_path):
    before, after = make_run(tmp_path / "before"), make_run(tmp_path / "after", speed=2.0)
    write(after, tmp_path / "out", compare=before)
    rows = {r[0]: r[1:] for r in _table_rows((tmp_path / "out/report.md").read_text(), "Compared with before")}
    assert rows["train amp batch 32 x 8 img/s"][2] == "2.000"
    assert rows["inference export amp batch 4 img/s"][:2] == ["80.0000", "40.0000"]
    assert rows["top-1 (evaluate)"][2] == "1.000"


def test_a_missing_stage_output_is_named_not_fatal(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "benchmark" / layout.BENCHMARK_RESULTS["inference"]).unlink()
    (run / layout.EVALUATE / layout.EVAL_METRICS).write_text("{cut sho")
    log = run / "train" / layout.TRAIN_LOG
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines) + lines[-1][:20])
    drawn = write(run, tmp_path / "out")
    text = (tmp_path / "out/report.md").read_text()
    missing = text.split("## Missing")[1].split("\n## ")[0]
    assert "benchmark/inference.json: not there (written by the benchmark inference stage)" in missing
    assert "evaluate/metrics.json: unreadable" in missing
    records = sum(line.startswith("DLLL ") for line in lines)
    assert f"train/{layout.TRAIN_LOG}: line {len(lines) + 1} cut short (a writer killed, or its disk full): the " \
        f"other {records} records are shown" in missing
    assert "_no inference benchmark_" in text
    assert drawn[layout.LATENCY_PLOT] is None and not (tmp_path / "out" / layout.LATENCY_PLOT).exists()
    assert _table_rows(text, "Training accuracy")[0][2] == "60.00%"  # the summary's evaluation instead
    assert drawn[layout.SCALING_PLOT] is not None and drawn[layout.TRAINING_PLOT] is not None  # the log before the cut


def test_runs_compared_in_one_table_with_each_seed_groups_mean_and_sd_and_the_best_named(tmp_path):
    recipes = {"a": (0, 0.01, 0.60), "b": (1, 0.01, 0.70), "c": (0, 0.02, 0.65)}  # seed, lr_init, top-1
    for name, (seed, lr, top1) in recipes.items():
        run = make_run(tmp_path / name)
        (run / "train" / layout.TRAIN_CONFIG).write_text(json.dumps({"model": {"arch": "efficientnet-b0"},
                                                             "train": {"seed": seed, "lr_init": lr, "epochs": 2}}))
        (run / layout.EVALUATE / layout.EVAL_METRICS).write_text(json.dumps({"top1": top1, "top5": 0.9}))
    (tmp_path / "c" / "benchmark" / layout.BENCHMARK_RESULTS["inference"]).unlink()
    drawn = write_runs([tmp_path / name for name in recipes], tmp_path / "out")
    text = (tmp_path / "out/report.md").read_text()
    lines = [line for line in text.splitlines() if line.startswith("|")]
    rows = {r[0]: r[1:] for r in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}
    export_1 = next(r for r in benchmark_results.load(tmp_path / "a" / layout.BENCHMARK, "inference")["rows"]
                    if (r["model"], r["batch_size"]) == ("export", 1))
    assert rows["a"] == ["efficientnet-b0", "train.lr_init=0.01, train.seed=0", "60.00%", "90.00%", "0 min 0 s",
                         "100.0", f"{export_1['latency_ms']['p50']:.2f}", f"{export_1['latency_ms']['p99']:.2f}"]
    assert rows["c"][1:3] == ["train.lr_init=0.02, train.seed=0", "65.00%"] and rows["c"][-2:] == ["-", "-"]
    group = rows["mean +- sd of 2 seeds"]  # a and b differ only in their seed; c has another rate
    assert group[1:4] == ["a, b", "65.00% +- 7.07 pts", "90.00% +- 0.00 pts"]
    assert "Best: **b** (70.00% top-1" in text
    assert f"- c: {tmp_path / 'c' / 'benchmark' / layout.BENCHMARK_RESULTS['inference']}: not there" in text
    assert set(plots.read_series(tmp_path / "out" / layout.RUNS_PLOT)) == {"a", "b", "c"} == set(drawn)
    assert 'src="runs.png"' in (tmp_path / "out/report.html").read_text()


def test_runs_that_share_a_seed_are_not_summarised_as_seeds(tmp_path):
    for name in ("a", "again"):  # the same recipe and seed twice (a rerun): no spread over seeds to report
        run = make_run(tmp_path / name)
        (run / "train" / layout.TRAIN_CONFIG).write_text(json.dumps({"train": {"seed": 0, "lr_init": 0.01}}))
        (run / layout.EVALUATE / layout.EVAL_METRICS).write_text(json.dumps({"top1": 0.5, "top5": 0.9}))
    write_runs([tmp_path / "a", tmp_path / "again"], tmp_path / "out")
    text = (tmp_path / "out/report.md").read_text()
    names = [line.strip("|").split("|")[0].strip() for line in text.splitlines() if line.startswith("|")]
    assert names[2:] == ["a", "again"]  # no mean +- sd row
