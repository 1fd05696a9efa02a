"""The report's PNG plots. Each PNG carries the series it draws as JSON in its ``effnet:series`` text
chunk (``PIL.Image.open(path).text``), so what a plot shows can be checked and reused without the figure.
"""
from __future__ import annotations

import json
from pathlib import Path

from effnet.core.atomic import atomic_open

SERIES_KEY = "effnet:series"


def _figure(panels: int):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.2), squeeze=False)
    return plt, fig, list(axes[0])


def _save(plt, fig, path: Path, series: dict) -> dict:
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90, metadata={SERIES_KEY: json.dumps(series)})
    plt.close(fig)
    return series


def read_series(path: str | Path) -> dict:
    """The series a plot of this module was drawn from."""
    from PIL import Image

    with Image.open(path) as image:
        return json.loads(image.text[SERIES_KEY])


def _stage_starts(curve: dict) -> list[dict]:
    """The stages after the first of a stage-wise run (none otherwise): where the curves mark a boundary."""
    return curve["stages"][1:]


def _mark_stages(axes, starts: list[dict]) -> None:
    """A dotted line at each stage's first epoch, labelled with the stage's image size."""
    for ax in axes:
        for stage in starts:
            ax.axvline(stage["first_epoch"], color="grey", linestyle=":", linewidth=1)
            ax.annotate(f"stage {stage['index']}: {stage['image_size']} px", (stage["first_epoch"], 1),
                        xycoords=("data", "axes fraction"), xytext=(2, -10), textcoords="offset points",
                        fontsize=7, color="grey")


def training(curve: dict, path: Path) -> dict | None:
    """Training loss, and training/validation top-1, against the epoch (from the train dllogger log); a
    stage-wise run's stage boundaries marked."""
    if not curve["step"]:
        return None
    x = [e if e is not None else s for e, s in zip(curve["epoch"], curve["step"])]
    starts = _stage_starts(curve)
    series = {"epoch": x, "loss": curve["loss"], "top1": curve["top1"], "stage": curve["stage"],
              "eval_epoch": curve["eval_epoch"], "eval_top1": curve["eval_top1"],
              "stage_starts": [s["first_epoch"] for s in starts]}
    plt, fig, (loss, top1) = _figure(2)
    loss.plot(x, curve["loss"], label="training loss")
    loss.set_xlabel("epoch")
    loss.set_ylabel("loss (nat)")
    top1.plot(x, curve["top1"], label="training top-1")
    if curve["eval_epoch"]:
        top1.plot(curve["eval_epoch"], curve["eval_top1"], "o-", label="validation top-1 (EMA)")
    top1.set_xlabel("epoch")
    top1.set_ylabel("top-1")
    _mark_stages((loss, top1), starts)
    for ax in (loss, top1):
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(plt, fig, path, series)


def learning_rate(curve: dict, path: Path) -> dict | None:
    """The learning rate schedule as logged, against the epoch; a stage-wise run's stage boundaries marked."""
    if not curve["step"]:
        return None
    x = [e if e is not None else s for e, s in zip(curve["epoch"], curve["step"])]
    starts = _stage_starts(curve)
    plt, fig, (ax,) = _figure(1)
    ax.plot(x, curve["lr"])
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    _mark_stages((ax,), starts)
    return _save(plt, fig, path, {"epoch": x, "lr": curve["lr"], "stage_starts": [s["first_epoch"] for s in starts]})


def _by(rows: list[dict], keys: tuple[str, ...]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(" ".join(str(row[k]) for k in keys), []).append(row)
    return groups


def throughput(bench_train: dict | None, bench_inference: dict | None, path: Path) -> dict | None:
    """Images/s against batch size: training on 1 rank per precision, inference per model and precision."""
    if not (bench_train or bench_inference):
        return None
    series = {"train": {}, "inference": {}}
    plt, fig, (train_ax, infer_ax) = _figure(2)
    for name, rows in _by([r for r in (bench_train or {}).get("rows", []) if r["ranks"] == 1], ("precision",)).items():
        rows = sorted(rows, key=lambda r: r["batch_size"])
        series["train"][name] = {"batch_size": [r["batch_size"] for r in rows],
                                 "img_per_sec": [r["img_per_sec"] for r in rows]}
        train_ax.plot(series["train"][name]["batch_size"], series["train"][name]["img_per_sec"], "o-", label=name)
    for name, rows in _by((bench_inference or {}).get("rows", []), ("model", "precision")).items():
        rows = sorted(rows, key=lambda r: r["batch_size"])
        series["inference"][name] = {"batch_size": [r["batch_size"] for r in rows],
                                     "img_per_sec": [r["img_per_sec"] for r in rows]}
        infer_ax.plot(series["inference"][name]["batch_size"], series["inference"][name]["img_per_sec"], "o-",
                      label=name)
    for ax, title in ((train_ax, "training, 1 rank"), (infer_ax, "inference")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("images/s")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    return _save(plt, fig, path, series)


def latency(bench_inference: dict | None, path: Path) -> dict | None:
    """Inference latency mean/p50/p90/p95/p99 (ms) against batch size, per model and precision."""
    if not bench_inference or not bench_inference.get("rows"):
        return None
    series = {}
    groups = _by(bench_inference["rows"], ("model", "precision"))
    plt, fig, axes = _figure(len(groups))
    for ax, (name, rows) in zip(axes, groups.items()):
        rows = sorted(rows, key=lambda r: r["batch_size"])
        sizes = [r["batch_size"] for r in rows]
        series[name] = {"batch_size": sizes}
        for stat in ("mean", "p50", "p90", "p95", "p99"):
            series[name][stat] = [r["latency_ms"][stat] for r in rows]
            ax.plot(sizes, series[name][stat], "o-", label=stat)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("latency per batch (ms)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(plt, fig, path, series)


def scaling(bench_train: dict | None, path: Path) -> dict | None:
    """Training images/s against rank count per precision and batch size, with linear scaling from 1 rank."""
    if not bench_train or not bench_train.get("rows"):
        return None
    series = {}
    plt, fig, (ax,) = _figure(1)
    for name, rows in _by(bench_train["rows"], ("precision", "batch_size")).items():
        rows = sorted(rows, key=lambda r: r["ranks"])
        ranks = [r["ranks"] for r in rows]
        series[name] = {"ranks": ranks, "img_per_sec": [r["img_per_sec"] for r in rows],
                        "weak_scaling": [r["weak_scaling"] for r in rows]}
        line, = ax.plot(ranks, series[name]["img_per_sec"], "o-", label=f"{name.replace(' ', ', batch ')}")
        one = next((r["img_per_sec"] for r in rows if r["ranks"] == 1), None)
        if one:
            ax.plot(ranks, [one * n for n in ranks], ":", color=line.get_color(), label="linear")
    ax.set_xlabel("ranks (GPUs)")
    ax.set_ylabel("images/s in all")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(plt, fig, path, series)


def runs(curves: dict[str, dict], path: Path) -> dict | None:
    """Training loss and validation top-1 of every run (name -> ``collect.training_curve``) against the epoch."""
    curves = {name: curve for name, curve in curves.items() if curve["step"]}
    if not curves:
        return None
    series = {}
    plt, fig, (loss, top1) = _figure(2)
    for name, curve in curves.items():
        x = [e if e is not None else s for e, s in zip(curve["epoch"], curve["step"])]
        series[name] = {"epoch": x, "loss": curve["loss"], "eval_epoch": curve["eval_epoch"],
                        "eval_top1": curve["eval_top1"]}
        line, = loss.plot(x, curve["loss"], label=name)
        top1.plot(curve["eval_epoch"], curve["eval_top1"], "o-", color=line.get_color(), label=name)
    loss.set_ylabel("training loss (nat)")
    top1.set_ylabel("validation top-1 (EMA)")
    for ax in (loss, top1):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return _save(plt, fig, path, series)
