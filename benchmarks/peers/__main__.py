"""``python -m benchmarks.peers WHAT`` (step, input, reader, data, serve, accuracy, keras-fit, finetune, stagewise):
how ours compares with peers, and stage-wise training with training at one size."""
import argparse
import sys

from benchmarks.peers import accuracy, data, finetune, reader, serve, stagewise, step
from benchmarks.peers import input as input_peers


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    for comparison in (step, input_peers, reader, data, serve, accuracy, finetune, stagewise):
        comparison.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


sys.exit(main())
