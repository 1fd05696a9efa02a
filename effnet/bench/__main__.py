"""``python -m effnet.bench {model,input,data,train,serve,accuracy}``: print benchmark figures."""
import argparse
import sys

from effnet.bench import accuracy, data, model, serve, train
from effnet.bench import input as input_bench


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m effnet.bench", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    model.register(sub)
    input_bench.register(sub)
    data.register(sub)
    train.register(sub)
    serve.register(sub)
    accuracy.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


sys.exit(main())
