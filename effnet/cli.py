"""Command line: one subcommand per pipeline stage (``effnet.stages``).

Each stage module exposes ``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking
the parsed arguments and returning an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from effnet.core import diskspace, provenance
from effnet.core.errors import EXIT_NO_SPACE, EXIT_OUT_OF_MEMORY, EXIT_USER_ERROR, OutOfMemoryError, UserError
from effnet.stages import STAGES


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every stage's subcommand."""
    parser = argparse.ArgumentParser(
        prog="python -m effnet",
        description="EfficientNet pipeline stages. Each stage is also a Snakemake rule; "
        "run `python -m effnet <stage> --help` for its options.",
    )
    subparsers = parser.add_subparsers(dest="stage", metavar="<stage>", required=True)
    for name in STAGES:
        importlib.import_module(f"effnet.stages.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen stage; return its exit code."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    provenance.log(argv, getattr(args, "config", None), getattr(args, "set", None))
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_OUT_OF_MEMORY if isinstance(exc, OutOfMemoryError) else EXIT_USER_ERROR
    except Exception as exc:
        full = diskspace.as_error(exc)
        if full is None:
            raise
        print(f"error: {args.stage}: {full}", file=sys.stderr)
        return EXIT_NO_SPACE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
