"""``python -m effnet benchmark {train,inference}``: throughput and latency tables of this host.

train: images/s per precision (fp32, tf32, amp), per-rank batch size and rank count (1 and all
ranks of the train job, or benchmark.ranks), weak-scaling efficiency, synthetic data or the real
input pipeline (benchmark.data; pipeline also names the side that limits). inference: images/s
and latency mean/p50/p90/p95/p99 per batch size 1, 2, 4, ... and precision, for the Keras model and
the export. Warm-up steps are excluded; raw per-step seconds are kept in OUTPUT/train.json and
OUTPUT/inference.json (dllogger records beside them). What is measured comes from the config's
``benchmark`` section; precisions this host cannot run are listed as skipped with the reason.
"""
from __future__ import annotations

import argparse


def main(args: argparse.Namespace) -> int:
    from effnet.core.config import load_config, parse_overrides
    from effnet.core.errors import UserError

    config = load_config(args.config, parse_overrides(args.set))
    if args.what == "train":
        from effnet.stages.benchmark import train

        if not args.data:
            raise UserError("benchmark train needs --data (a prepared TFRecord directory)")
        if args.worker:
            return train.work(config, args.data, args.output)
        result = train.run(config, args.data, args.output, args.launcher)
        for row in result["rows"]:
            print(f"train {row['precision']:5s} batch {row['batch_size']:4d} x {row['ranks']} rank(s): "
                  f"{row['img_per_sec']:9.1f} img/s" + (f"  weak scaling {row['weak_scaling']:.2f}"
                                                       if row["ranks"] > 1 and row["weak_scaling"] else ""))
    else:
        from effnet.stages.benchmark import inference

        result = inference.run(config, args.output, args.model, args.export)
        for row in result["rows"]:
            print(f"inference {row['model']:6s} {row['precision']:5s} batch {row['batch_size']:4d}: "
                  f"{row['img_per_sec']:9.1f} img/s, p50 {row['latency_ms']['p50']:.2f} ms, "
                  f"p99 {row['latency_ms']['p99']:.2f} ms")
    for skipped in result["skipped"]:
        print(f"skipped {skipped['precision']}: {skipped['reason']}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from effnet.core.config import add_config_arguments

    p = subparsers.add_parser("benchmark", help="training and inference throughput/latency tables",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("train", "inference"), help="which benchmark: training steps or inference calls")
    p.add_argument("--output", required=True, help="results directory (train.json / inference.json)")
    p.add_argument("--data", help="train: prepared TFRecord directory (classes; the input pipeline for "
                                  "benchmark.data=pipeline)")
    p.add_argument("--model", help="inference: a train run directory (arch, classes, size; else from the config)")
    p.add_argument("--export", help="inference: an export directory (else a temporary export of the model)")
    p.add_argument("--launcher", help="train: command that starts {ranks} ranks in front of the worker "
                                      "(default: horovodrun --gloo -np {ranks} -H localhost:{ranks} for more than 1)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    add_config_arguments(p, set_help="override a config key, e.g. --set benchmark.steps=50 (repeatable)")
    p.set_defaults(func=main)
