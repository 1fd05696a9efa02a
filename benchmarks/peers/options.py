"""The options every comparison shares: what is timed (image size, batch), how (rounds that alternate the
sides, so that drift of the machine's speed hits all of them; steps per side per round) and where the
generated data is kept."""
from __future__ import annotations

import argparse


def add_timing(parser: argparse.ArgumentParser, *, image_size: int = 224, batch_size: int = 32,
               rounds: int | None = 5, steps: int | None = None, workdir: bool = True) -> None:
    """Add --image-size and --batch-size; --rounds, --steps (those given) and --workdir."""
    parser.add_argument("--image-size", type=int, default=image_size)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    if rounds is not None:
        parser.add_argument("--rounds", type=int, default=rounds, help="rounds, each timing every side once")
    if steps is not None:
        parser.add_argument("--steps", type=int, default=steps, help="steps per side per round")
    if workdir:
        parser.add_argument("--workdir", help="keep the generated data here and reuse it (default: a new "
                                              "temporary directory)")
