"""``python -m effnet.bench model``: print benchmark figures."""
import argparse
import sys

from effnet.bench import model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m effnet.bench", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    model.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


sys.exit(main())
