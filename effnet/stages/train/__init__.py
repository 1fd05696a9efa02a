"""``python -m effnet train``: the reference recipe as a Horovod job that resumes where it was killed.

Run it as one process, under ``horovodrun -np N -H localhost:N``, or one task per GPU under
``srun`` (see ``effnet.core.ranks``). Writes to OUTPUT: ``config.yaml`` (the effective config),
``train.dllog.json`` (dllogger records), ``tensorboard/``, ``checkpoints/`` (or
``--checkpoint-dir``), and, when training is complete, ``model.keras``, ``ema.keras`` and last
``train_summary.json`` (see ``effnet.formats.trained_run``). Exit status 75 means "stopped by SIGTERM/SIGUSR1
after writing a checkpoint: rerun to resume"; 2 is a configuration or data error.
"""
from __future__ import annotations

import argparse
import os
import sys


def main(args: argparse.Namespace) -> int:
    from effnet.core.errors import EXIT_PREEMPTED
    from effnet.stages.train.stop import StopFlag

    flag = StopFlag()  # before TensorFlow: a signal during start-up stops the rank at its first step
    from effnet.core.config import load_config, parse_overrides
    from effnet.stages.train.loop import run

    config = load_config(args.config, parse_overrides(args.set))
    status = run(config, args.data, args.output, args.checkpoint_dir, flag, args.index)
    if status == EXIT_PREEMPTED:
        # Every rank leaves at once, without tearing down TensorFlow and Horovod (seconds): a rank that is
        # still tearing down when srun's --wait after the first exit runs out would end with 137, which srun
        # would report for the step instead of 75 (a crash, to the retries).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def register(subparsers: argparse._SubParsersAction) -> None:
    from effnet.core.config import add_config_arguments
    from effnet.formats.record_index import add_index_argument

    p = subparsers.add_parser("train", help="train (or resume) a model with Horovod",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="prepared TFRecord directory (manifest.json, shards)")
    add_index_argument(p)
    p.add_argument("--output", required=True, help="run directory")
    p.add_argument("--checkpoint-dir", help="checkpoints (default OUTPUT/checkpoints)")
    add_config_arguments(p)
    p.set_defaults(func=main)
