"""``python -m effnet.benchmark.peers {step,input,reader,data,serve,accuracy}``: how ours compares with peers."""
import argparse
import sys

from effnet.benchmark.peers import accuracy, data, reader, serve, step
from effnet.benchmark.peers import input as input_peers


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m effnet.benchmark.peers", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    for comparison in (step, input_peers, reader, data, serve, accuracy):
        comparison.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


sys.exit(main())
