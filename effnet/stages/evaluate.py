"""``python -m effnet evaluate``: metrics of a trained model on the whole validation split.

Loads a finished run's EMA (default) or raw weights, or those of any checkpoint of it, and
evaluates every validation example exactly once on one or N Horovod ranks (padding excluded).
Writes OUTPUT (JSON): loss, top-1, top-5, examples, images/s and per-batch latency in ms (mean
and true percentiles, numpy's linear interpolation, over the batches after the warm-up ones;
the reference's "percentiles" are means of the fastest batches), with the confusion matrix and
per-class accuracy. dllogger records use the reference's metric names (eval_loss,
eval_accuracy_top_1, eval_accuracy_top_5, avg_exp_per_second_eval, latency_90pct, ...).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from effnet.core import layout
from effnet.core.timing import METHOD, PERCENTILES, latency_ms

LATENCY_METHOD = f"the model step of each batch, over the batches of every rank: {METHOD}"


def check_classes(run_classes: list[dict], data_classes: list[dict], run_dir, data_dir) -> None:
    """UserError naming both sides when the data's classes are not the ones the model was trained on."""
    from effnet.core.errors import UserError

    if [c["id"] for c in run_classes] != [c["id"] for c in data_classes]:
        first = next((i for i, (a, b) in enumerate(zip(run_classes, data_classes)) if a["id"] != b["id"]),
                     min(len(run_classes), len(data_classes)))
        raise UserError(
            f"{data_dir} has {len(data_classes)} classes and {run_dir} was trained on {len(run_classes)}; "
            f"they differ from class index {first} on: the data's "
            f"{data_classes[first]['id'] if first < len(data_classes) else 'nothing'!r}, the model's "
            f"{run_classes[first]['id'] if first < len(run_classes) else 'nothing'!r}")


def run(run_dir: str, data_dir: str, output: str, *, weights: str | None = None, checkpoint: str | None = None,
        overrides: dict | None = None, confusion_png: str | None = None, index_dir: str | None = None) -> dict:
    """Evaluate and write ``output``; return the metrics (on every rank).

    ``overrides`` change the run's config (eval.batch_size, eval.warmup_batches, data.backend);
    ``weights`` defaults to its eval.weights.
    """
    import horovod.tensorflow as hvd

    from effnet.core import ranks
    from effnet.core.atomic import write_json
    from effnet.core.config import load_config
    from effnet.data.validation import evaluate, make_eval_step, validation_batches
    from effnet.formats import trained_run
    from effnet.formats.records import load_manifest

    summary = trained_run.load_summary(run_dir)
    config = load_config(Path(run_dir) / layout.TRAIN_CONFIG, overrides)
    check_classes(summary["classes"], load_manifest(data_dir)["classes"], run_dir, data_dir)
    weights, warmup = weights or config["eval"]["weights"], config["eval"]["warmup_batches"]
    world = ranks.init()
    model = trained_run.load_model(run_dir, weights, checkpoint)
    batch_size = config["eval"]["batch_size"]
    batches = validation_batches(data_dir, config, world, summary["image_size"], summary["crop_padding"], index_dir)
    step = make_eval_step(model, summary["num_classes"])
    start = time.perf_counter()
    result = evaluate(step, batches, lambda x: hvd.allreduce(x, op=hvd.Sum))
    wall = time.perf_counter() - start
    timed = result.batch_seconds[warmup:]
    # The device's rate, as the reference's: full (padded) batches per second of model step after the warm-up.
    rate = batch_size * len(timed) / sum(timed) if timed else result.examples / world.size / wall
    gathered = hvd.allgather_object((rate, timed))  # every rank's rate and batch seconds
    rates = [r for r, _ in gathered]
    latency = latency_ms([s for _, rank_seconds in gathered for s in rank_seconds])
    confusion = result.confusion
    per_class = np.divide(np.diag(confusion), confusion.sum(1), out=np.full(len(confusion), np.nan),
                          where=confusion.sum(1) > 0)
    metrics = {
        **result.metrics(), "images_per_second": sum(rates), "images_per_second_per_rank": rates,
        "wall_seconds": wall, "latency_ms": latency, "latency_method": LATENCY_METHOD,
        "batches": len(result.batch_seconds), "warmup_batches": min(warmup, len(result.batch_seconds)),
        "batch_size": batch_size, "world_size": world.size, "weights": weights,
        "checkpoint": str(checkpoint) if checkpoint else None, "model": str(run_dir), "data": str(data_dir),
        "arch": summary["arch"], "image_size": summary["image_size"],
        "per_class_top1": {c["id"]: (None if np.isnan(a) else float(a)) for c, a in zip(summary["classes"], per_class)},
        "confusion": confusion.tolist(),
    }
    if world.chief:
        log_metrics(metrics, Path(output).with_suffix(".dllog.json"))
        if confusion_png:
            plot_confusion(confusion, [c["name"] for c in summary["classes"]], confusion_png)
        write_json(output, metrics)  # the declared output, last
    return metrics


def log_metrics(metrics: dict, path: Path) -> None:
    """The metrics as one dllogger record under the reference's names (and METADATA units), to ``path`` and stdout."""
    from effnet.formats.dllog import DLLogger, Verbosity

    latency = metrics["latency_ms"]
    with DLLogger(path, stream=sys.stdout, verbosity=Verbosity.DEFAULT, append=False) as log:
        for name, unit in (("eval_loss", None), ("eval_accuracy_top_1", None), ("eval_accuracy_top_5", None),
                           ("avg_exp_per_second_eval", "samples/s"), ("avg_exp_per_second_eval_per_GPU", "samples/s"),
                           ("avg_time_per_exp_eval", "ms"), *((f"latency_{p}pct", "ms") for p in PERCENTILES),
                           ("latency_avg", "ms")):
            log.metadata(name, {"unit": unit})
        log.log((), {
            "eval_loss": metrics["loss"], "eval_accuracy_top_1": metrics["top1"],
            "eval_accuracy_top_5": metrics["top5"], "eval_examples": metrics["examples"],
            "avg_exp_per_second_eval": metrics["images_per_second"],
            "avg_exp_per_second_eval_per_GPU": metrics["images_per_second"] / metrics["world_size"],
            "avg_time_per_exp_eval": 1000.0 / metrics["images_per_second"],
            **{f"latency_{p}pct": latency[f"p{p}"] for p in PERCENTILES}, "latency_avg": latency["mean"],
        }, verbosity=Verbosity.DEFAULT)


def plot_confusion(confusion: np.ndarray, names: list[str], path: str) -> None:
    """The confusion matrix as a PNG (rows: true class, columns: predicted), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from effnet.core.atomic import atomic_open

    size = min(4 + 0.35 * len(names), 40)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(confusion, cmap="Blues")
    if len(names) <= 50:
        ax.set_xticks(range(len(names)), names, rotation=90)
        ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    from effnet.core.config import parse_overrides

    run(args.model, args.data, args.output, weights=args.weights, checkpoint=args.checkpoint,
        overrides=parse_overrides(args.set), confusion_png=args.confusion_png, index_dir=args.index)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from effnet.core.config import add_config_arguments
    from effnet.formats.record_index import add_index_argument

    p = subparsers.add_parser("evaluate", help="evaluate a trained model on the validation split",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the train stage's run directory")
    p.add_argument("--data", required=True, help="prepared TFRecord directory (manifest.json, shards)")
    add_index_argument(p)
    p.add_argument("--output", required=True, help="metrics JSON file (dllogger records beside it)")
    p.add_argument("--weights", choices=("ema", "raw"), help="which weights (default: the config's eval.weights, ema)")
    p.add_argument("--checkpoint", help="a ckpt-* directory of this run to evaluate instead of the final weights")
    p.add_argument("--confusion-png", help="also plot the confusion matrix to this PNG")
    add_config_arguments(p, config_help=None,
                         set_help="override a key of the run's config, e.g. --set eval.batch_size=64 or "
                                  "eval.warmup_batches=5 (batches left out of latency and throughput) (repeatable)")
    p.set_defaults(func=main)
