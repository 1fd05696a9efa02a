"""The report's tables as data (headers, rows), filled from a run; published figures beside ours where
the hardware, model and image size match the reference's (``effnet.stages.report.reference``)."""
from __future__ import annotations

import json
import statistics

from effnet.core.batch_runs import flatten
from effnet.stages.report import reference
from effnet.stages.report.collect import RunData, training_seconds

Table = tuple[list[str], list[list]]
PRECISION_NAMES = {"float32": "fp32", "mixed_float16": "amp", "mixed_bfloat16": "amp (bf16)"}


def _environment(run: RunData) -> dict | None:
    for bench in (run.bench_train, run.bench_inference):
        if bench:
            return bench["environment"]
    return None


def environment(run: RunData) -> Table:
    """Host, CPU, GPUs and driver, versions, container and config hash of the run's benchmarks."""
    env = _environment(run)
    rows = [["run directory", str(run.run_dir)], ["config sha256 (train/config.yaml)", run.config_sha256 or "-"]]
    if env:
        gpus = env["gpus"]
        rows += [
            ["host", env["host"]],
            ["CPU", f"{env['cpu']} ({env['cpus_usable']} of {env['cpu_count']} cores usable)"],
            ["GPUs", f"{len(gpus)} x {gpus[0]['name']} ({gpus[0]['memory_mib']} MiB)" if gpus else "none"],
            ["driver", gpus[0]["driver"] if gpus else "-"],
            *([name, version or "not installed"] for name, version in env["versions"].items()),
            ["container", ", ".join(f"{k}={v}" for k, v in env["container"].items()) if env["container"] else "none"],
        ]
    return ["", ""], rows


def _precision(policy: str | None) -> str:
    return PRECISION_NAMES.get(policy, policy or "-")


def accuracy(run: RunData) -> Table:
    """GPUs, precision, top-1/top-5 of the evaluate stage, epochs, time to train; the published figure beside."""
    s, metrics = run.summary, run.eval_metrics
    if not s:
        return [], []
    seconds = training_seconds(run.train_log)
    precision = _precision(s.get("precision"))
    published = "-"
    label = reference.comparable(s["arch"], s["image_size"], _environment(run))
    if label:
        figures = reference.TRAIN_ACCURACY.get(s["arch"], {}).get(label, {}).get(s["world_size"], {})
        key = "amp" if precision.startswith("amp") else ("tf32" if label.startswith("A100") else "fp32")
        if key in figures:
            published = f"{figures[key][0]:.2f}% in {figures[key][1]} h ({label})"
    top1 = metrics["top1"] if metrics else (s["eval"] or {}).get("top1")
    top5 = metrics["top5"] if metrics else (s["eval"] or {}).get("top5")
    return (["GPUs (ranks)", "precision", "top-1", "top-5", "epochs", "steps", "time to train", "published"],
            [[s["world_size"], precision, _percent(top1), _percent(top5), s["epochs"], s["steps"],
              _duration(seconds), published]])


def stages(run: RunData) -> Table:
    """A stage-wise run's stages: epochs, image size and regularisation of each (none for one stage)."""
    trained = (run.summary or {}).get("stages") or []
    if len(trained) < 2:
        return [], []
    return (["stage", "epochs", "image size", "mixup alpha", "CutMix alpha", "RandAugment magnitude"],
            [[s["index"], _epochs(s["first_epoch"], s["end_epoch"]), f"{s['image_size']} px",
              _num(s["mixup_alpha"], 2), _num(s["cutmix_alpha"], 2), s["randaug_magnitude"]] for s in trained])


def _epochs(first: int, end: int) -> str:
    return str(first) if end == first + 1 else f"{first}-{end - 1}"


def train_performance(run: RunData) -> Table:
    """One row per benchmarked precision, batch size and rank count."""
    bench = run.bench_train
    if not bench:
        return [], []
    label = reference.comparable(bench["arch"], bench["image_size"], bench["environment"])
    published = reference.TRAIN_THROUGHPUT.get(bench["arch"], {}).get(label, {}) if label else {}
    rows = []
    for r in sorted(bench["rows"], key=lambda r: (r["precision"], r["batch_size"], r["ranks"])):
        figure = published.get(r["ranks"], {}).get(r["precision"])
        rows.append([r["ranks"], r["precision"], r["batch_size"], _num(r["img_per_sec"]),
                     _num(r["img_per_sec"] / r["ranks"]), _num(r["step_latency_ms"]["p50"], 2),
                     _num(r["step_latency_ms"]["p99"], 2), _num(r["weak_scaling"], 2),
                     r.get("limited_by", "-"), f"{figure} ({label})" if figure else "-"])
    return (["ranks", "precision", "batch/rank", "img/s", "img/s per rank", "step p50 ms", "step p99 ms",
             "weak scaling", "limited by", "published img/s"], rows)


def inference(run: RunData) -> Table:
    """One row per model, precision and batch size: img/s and latency mean/p50/p90/p95/p99 in ms."""
    bench = run.bench_inference
    if not bench:
        return [], []
    rows = []
    for r in sorted(bench["rows"], key=lambda r: (r["model"], r["precision"], r["batch_size"])):
        label = reference.comparable(_arch(run, bench), r["image_size"], bench["environment"])
        figures = reference.INFERENCE.get(_arch(run, bench), {}).get(label, {}).get(r["precision"], {}) if label else {}
        figure = figures.get(r["batch_size"])
        lat = r["latency_ms"]
        rows.append([r["model"], r["precision"], r["batch_size"], _num(r["img_per_sec"]),
                     *(_num(lat[k], 2) for k in ("mean", "p50", "p90", "p95", "p99")),
                     f"{figure[0]} img/s, {figure[1]} ms ({label})" if figure else "-"])
    return (["model", "precision", "batch", "img/s", "mean ms", "p50 ms", "p90 ms", "p95 ms", "p99 ms",
             "published"], rows)


def skipped(run: RunData) -> Table:
    """The precisions (and models) the benchmarks could not run on this host, and why."""
    rows = [["train", s["precision"], s["reason"]] for s in (run.bench_train or {}).get("skipped", [])]
    rows += [[f"inference ({s['model']})", s["precision"], s["reason"]]
             for s in (run.bench_inference or {}).get("skipped", [])]
    return ["benchmark", "precision", "why skipped"], rows


def headline(run: RunData) -> dict[str, float]:
    """The run's figures by name, what ``--compare`` sets side by side."""
    out: dict[str, float] = {}
    if run.eval_metrics:
        out["top-1 (evaluate)"] = run.eval_metrics["top1"]
        out["top-5 (evaluate)"] = run.eval_metrics["top5"]
    if run.summary:
        out["training img/s (whole run)"] = run.summary["img_per_sec"]
    seconds = training_seconds(run.train_log)
    if seconds:
        out["time to train (s)"] = seconds
    for r in (run.bench_train or {}).get("rows", []):
        out[f"train {r['precision']} batch {r['batch_size']} x {r['ranks']} img/s"] = r["img_per_sec"]
    for r in (run.bench_inference or {}).get("rows", []):
        name = f"inference {r['model']} {r['precision']} batch {r['batch_size']}"
        out[f"{name} img/s"] = r["img_per_sec"]
        out[f"{name} p99 ms"] = r["latency_ms"]["p99"]
    return out


def compare(run: RunData, other: RunData) -> Table:
    """Every figure either run has, side by side, with the ratio this / other."""
    ours, theirs = headline(run), headline(other)
    mine, others = (run.name, other.name) if run.name != other.name else (str(run.run_dir), str(other.run_dir))
    rows = []
    for name in list(ours) + [n for n in theirs if n not in ours]:
        a, b = ours.get(name), theirs.get(name)
        ratio = a / b if a is not None and b else None
        rows.append([name, _num(a, 4), _num(b, 4), _num(ratio, 3)])
    return ["figure", mine, others, f"ratio {mine} / {others}"], rows


# the keys of the config the train stage ran with that tell runs apart; a seed group differs only in SEED
TRAINED_SECTIONS = ("data", "model", "train")
SEED = "train.seed"


def changed_keys(runs: list[RunData]) -> list[str]:
    """The dotted keys of data, model and train whose values differ between the runs."""
    flat = [_trained(run) for run in runs]
    keys = sorted(set().union(*flat))
    return [key for key in keys if len({f.get(key) for f in flat}) > 1]


def _trained(run: RunData) -> dict[str, str]:
    return flatten({section: (run.config or {}).get(section) for section in TRAINED_SECTIONS})


def _figures(run: RunData) -> list[float | None]:
    """top-1, top-5, time to train (s), training img/s, inference latency p50 and p99 (ms) of the smallest batch
    of the export in fp32 (else of the first model timed)."""
    metrics, summary = run.eval_metrics or {}, run.summary or {}
    rows = sorted((run.bench_inference or {}).get("rows", []),
                  key=lambda r: (r["model"] != "export", r["precision"] != "fp32", r["batch_size"]))
    latency = rows[0]["latency_ms"] if rows else {}
    return [metrics.get("top1"), metrics.get("top5"), training_seconds(run.train_log), summary.get("img_per_sec"),
            latency.get("p50"), latency.get("p99")]


def best(runs: list[RunData]) -> RunData | None:
    """The run of the highest evaluated top-1 (None if none was evaluated)."""
    evaluated = [run for run in runs if run.eval_metrics]
    return max(evaluated, key=lambda run: run.eval_metrics["top1"], default=None)


def _arch(run: RunData, bench: dict) -> str:
    return (run.summary or {}).get("arch") or bench["config"]["model"]["arch"]


def _num(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"


# the runs table's figures (``_figures``): header, format, format of a standard deviation
RUN_COLUMNS = (("top-1", _percent, lambda sd: f"{100 * sd:.2f} pts"),
               ("top-5", _percent, lambda sd: f"{100 * sd:.2f} pts"),
               ("time to train", _duration, lambda sd: f"{sd:.0f} s"),
               ("img/s (training)", _num, _num),
               ("latency p50 ms", lambda v: _num(v, 2), lambda sd: _num(sd, 2)),
               ("latency p99 ms", lambda v: _num(v, 2), lambda sd: _num(sd, 2)))


def runs(compared: list[RunData]) -> Table:
    """One row per run (its arch, the data/model/train keys that tell it apart, its figures), then for each
    group of runs that differ only in train.seed, each run's seed its own, the mean and sample standard
    deviation of each figure."""
    changed = changed_keys(compared)
    rows, groups = [], {}
    for run in compared:
        trained = _trained(run)
        keys = ", ".join(f"{key}={json.loads(trained[key])}" for key in changed if key in trained)
        figures = _figures(run)
        rows.append([run.name, (run.summary or {}).get("arch", "-"), keys or "-",
                     *(fmt(value) for (_, fmt, _), value in zip(RUN_COLUMNS, figures))])
        group = json.dumps({k: v for k, v in trained.items() if k != SEED}, sort_keys=True)
        groups.setdefault(group, []).append((run, figures, trained.get(SEED)))
    for members in groups.values():
        if len(members) > 1 and len({seed for *_, seed in members}) == len(members):
            rows.append([f"mean +- sd of {len(members)} seeds", (members[0][0].summary or {}).get("arch", "-"),
                         ", ".join(run.name for run, *_ in members),
                         *(_spread([f[i] for _, f, _ in members], fmt, sd_fmt)
                           for i, (_, fmt, sd_fmt) in enumerate(RUN_COLUMNS))])
    return ["run", "arch", "changed keys", *(header for header, _, _ in RUN_COLUMNS)], rows


def _spread(values: list, fmt, sd_fmt) -> str:
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return "-"
    return f"{fmt(statistics.mean(values))} +- {sd_fmt(statistics.stdev(values))}"
