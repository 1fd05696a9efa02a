"""``python -m benchmarks.memory``: the peak memory (resident set) of each stage, run as the pipeline runs it, on the
demo's records, to size ``cluster.jobs.<rule>.mem_mb``.

Every stage runs in a process of its own (``python -m effnet <stage>``); its peak is the largest resident set of any
process it started, as the kernel accounts it for waited children. Training is measured on the CPU at several image
sizes and batch sizes, and a line ``base + per_pixel x batch x size^2`` is fitted to it; on a GPU the activations
live in device memory and the host's figure is the runtime's and the input pipeline's (not measured here).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# the wrapper that runs a stage and prints its status and peak (ru_maxrss of the waited children, KiB on Linux)
PEAK = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
        "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def peak_mib(*stage: str) -> float:
    """Peak resident MiB of ``python -m effnet STAGE...`` and every process it starts."""
    proc = subprocess.run([sys.executable, "-c", PEAK, sys.executable, "-m", "effnet", *stage], cwd=REPO,
                          capture_output=True, text=True, check=True)
    code, kib = proc.stdout.split()[-2:]
    if code != "0":
        raise RuntimeError(f"effnet {' '.join(stage)} failed ({code}):\n{proc.stderr[-3000:]}")
    return int(kib) / 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="efficientnet-b0")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="training image sizes")
    p.add_argument("--batches", type=int, nargs="+", default=[8, 16], help="training batch sizes")
    p.add_argument("--steps", type=int, default=3, help="training steps per measurement")
    p.add_argument("--per-class", type=int, default=16, help="demo training images per class")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="effnet-memory-") as tmp:
        root = Path(tmp)
        rec, model = root / "rec", ["--set", f"model.arch={args.arch}"]
        rows = {"demo-data": peak_mib("demo-data", "--output", str(root / "demo"), "--train-per-class",
                                      str(args.per_class)),
                "prepare (largest process, 1 worker)": peak_mib(
                    "prepare", "--source", "folders", "--input", str(root / "demo"), "--output", str(rec),
                    "--workers", "1", "--train-shards", "2", "--val-shards", "1"),
                "index": peak_mib("index", "--tfrecords", str(rec), "--output", str(root / "dali-index"))}
        fit = []
        for size in args.sizes:
            for batch in args.batches:
                run = root / f"run-{size}-{batch}"
                mib = peak_mib("train", "--data", str(rec), "--output", str(run), *model, "--set",
                               f"model.image_size={size}", "--set", f"train.batch_size={batch}", "--set",
                               "train.epochs=1", "--set", f"train.steps_per_epoch={args.steps}", "--set",
                               f"eval.batch_size={batch}")
                rows[f"train {size} px, batch {batch} (CPU)"] = mib
                fit.append((batch * size * size, mib))
        run = root / f"run-{args.sizes[0]}-{args.batches[0]}"
        rows["evaluate"] = peak_mib("evaluate", "--model", str(run), "--data", str(rec), "--output",
                                    str(root / "metrics.json"))
        rows["export"] = peak_mib("export", "--model", str(run), "--output", str(root / "export"))
        rows["infer"] = peak_mib("infer", "--model", str(root / "export"), "--images", str(root / "demo" / "val"),
                                 "--output", str(root / "predictions.csv"))
        rows["benchmark inference"] = peak_mib("benchmark", "inference", "--model", str(run), "--export",
                                               str(root / "export"), "--output", str(root / "bench"), "--set",
                                               "benchmark.precisions=[fp32]", *model)
    for name, mib in rows.items():
        print(f"{name:36s} {mib:8.0f} MiB")
    if len(fit) >= 2:
        per_pixel, base = np.polyfit([x for x, _ in fit], [y for _, y in fit], 1)
        print(f"train (CPU) fit: {base:.0f} MiB + {per_pixel * 1024:.3f} KiB x batch x size^2")
    print(json.dumps({"arch": args.arch, "peak_mib": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
