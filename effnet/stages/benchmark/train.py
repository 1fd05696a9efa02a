"""Training throughput per precision, per-rank batch size and rank count, with weak-scaling efficiency.

The command (``run``) starts one worker per rank count: the rank count's processes (``horovodrun``
locally, or the ``--launcher`` the workflow gives, which uses srun in a SLURM job). Each worker
builds the real train step (``effnet.stages.train.loop.Trainer``: the recipe's optimizer, L2, EMA and, on
more than one rank, the Horovod tape) for every precision and batch size, runs ``warmup_steps``
untimed (tracing, autotuning) and times ``steps`` steps one by one, each to its result on the host.
Rank 0 writes one dllogger record per configuration; the command parses those records into
``train.json`` (``effnet.formats.benchmark_results``).

Data: ``synthetic`` feeds one random batch held on the device (the step alone); ``pipeline`` feeds
the real input pipeline of the config (data.backend, train.augment) and also times the pipeline
alone and the synthetic step, so the row says which side limits the throughput.
"""
from __future__ import annotations

import copy
import gc
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from effnet.core import layout
from effnet.formats.dllog import DLLogger, Verbosity, read_records

LOCAL_LAUNCHER = "{horovodrun} --gloo -np {ranks} -H localhost:{ranks}"
RECORD = "train_benchmark"  # the dllogger step of a configuration's record


def rank_counts(config: dict) -> list[int]:
    """benchmark.ranks, or 1 and all ranks of the train job (nodes x GPUs per node, 1 per node on CPU)."""
    if config["benchmark"]["ranks"]:
        return sorted(set(config["benchmark"]["ranks"]))
    cluster = config["cluster"]
    return sorted({1, cluster["nodes"] * max(cluster["gpus_per_node"], 1)})


# -- a worker: every configuration on this rank count --------------------------------------------
def _trainer(config: dict, data_dir: str, batch: int, precision, world, scratch: Path):
    from effnet.stages.train.loop import Trainer

    config = copy.deepcopy(config)
    config["train"].update(batch_size=batch, grad_accum_steps=1, steps_per_epoch=None)
    return Trainer(config, data_dir, scratch, scratch, world, precision)  # it saves nothing there


def _measure(trainer, data: str, warmup: int, steps: int) -> dict:
    """Timed steps of ``trainer`` at its last stage (the final size, where stage-wise training is slowest; as the
    reference measures it), and, for ``pipeline``, the input alone and the synthetic step."""
    import tensorflow as tf

    from effnet.core.timing import time_calls

    last = trainer.stages[-1]
    trainer.set_stage(last)
    batch = trainer.t["batch_size"]
    seed = tf.constant([0, 1], tf.int64)
    size = trainer.image_size
    images = tf.random.uniform([batch, size, size, 3], 0, 255, seed=trainer.world.rank)
    labels = tf.random.uniform([batch], 0, trainer.num_classes, tf.int32, seed=trainer.world.rank)

    def step(x, y):
        trainer.train_step(x, y, seed)
        trainer.completed_step()  # the step's result on the host (and, across ranks, its allreduce)

    measured = {"synthetic": time_calls(lambda: step(images, labels), steps, warmup)}
    if data == "pipeline":
        calls = 2 * (warmup + steps)  # the pipeline-fed steps, then the pipeline alone
        epochs = -(-calls // trainer.micro_per_epoch) + 1
        stream = iter(trainer.batches(last, 0, epochs, 0))
        measured["pipeline"] = time_calls(lambda: step(*next(stream)), steps, warmup)
        measured["input"] = time_calls(lambda: [t.numpy() for t in next(stream)], steps, warmup)
    return measured


def work(config: dict, data_dir: str, log_path: str) -> int:
    """One worker (every rank runs it): measure each precision x batch size; rank 0 logs the records."""
    from effnet.core import ranks
    from effnet.core.timing import latency_ms, rate
    from effnet.stages.benchmark import precisions

    b = config["benchmark"]
    world = ranks.init()
    log = DLLogger(log_path if world.chief else None, stream=sys.stdout if world.chief else None,
                   verbosity=Verbosity.VERBOSE if world.chief else Verbosity.OFF, append=False)
    log.metadata("img_per_sec", {"unit": "images/s"})
    log.metadata("step_latency_ms", {"unit": "ms"})
    scratch = tempfile.TemporaryDirectory(prefix="effnet-benchmark-")
    for name, precision in precisions.runnable(config, log):
        for batch in b["train_batch_sizes"]:
            trainer = _trainer(config, data_dir, batch, precision, world, Path(scratch.name))
            measured = _measure(trainer, b["data"], b["warmup_steps"], b["steps"])
            # every rank's step seconds: a step ends when its allreduce does, so ranks agree to within noise
            gathered = trainer.hvd.allgather_object(measured, name=f"benchmark_{name}_{batch}")
            record = {"precision": name, "policy": precision.policy, "xla": precision.jit_compile,
                      "tf32": precision.tf32, "batch_size": batch, "ranks": world.size, "device": world.device,
                      "data": b["data"], "warmup_steps": b["warmup_steps"], "steps": b["steps"]}
            for kind in measured:
                seconds = gathered[0][kind]
                # per rank: batch / mean step; in all: the ranks' sum (each processes its own batch)
                record[f"{kind}_img_per_sec"] = sum(rate(g[kind], batch) for g in gathered)
                record[f"{kind}_latency_ms"] = latency_ms(seconds)
                record[f"{kind}_seconds"] = seconds
            fed = "pipeline" if b["data"] == "pipeline" else "synthetic"  # the reference's names, for its parsers
            record["avg_exp_per_second_training"] = record[f"{fed}_img_per_sec"]
            record["avg_exp_per_second_training_per_GPU"] = record[f"{fed}_img_per_sec"] / world.size
            log.log((RECORD,), record)
            del trainer
            gc.collect()
    log.close()
    scratch.cleanup()
    return 0


# -- the command: workers per rank count, their records into train.json ----------------------------
def _row(record: dict) -> dict:
    row = {k: v for k, v in record.items() if not k.startswith(("synthetic_", "pipeline_", "input_", "avg_exp_"))}
    fed = "pipeline" if record["data"] == "pipeline" else "synthetic"
    row.update(img_per_sec=record[f"{fed}_img_per_sec"], step_latency_ms=record[f"{fed}_latency_ms"],
               step_seconds=record[f"{fed}_seconds"])
    if fed == "pipeline":
        row.update(input_img_per_sec=record["input_img_per_sec"],
                   synthetic_img_per_sec=record["synthetic_img_per_sec"],
                   limited_by="input pipeline" if record["input_img_per_sec"] < record["synthetic_img_per_sec"]
                   else "compute")
    return row


def summarize(records: list[dict], skipped: dict[str, str]) -> dict:
    """train.json's rows from the workers' records, with weak-scaling efficiency against 1 rank."""
    rows = [_row(r) for r in records]
    single = {(r["precision"], r["batch_size"]): r["img_per_sec"] for r in rows if r["ranks"] == 1}
    for row in rows:
        one = single.get((row["precision"], row["batch_size"]))
        row["weak_scaling"] = row["img_per_sec"] / (row["ranks"] * one) if one else None
    return {"rows": rows, "skipped": [{"precision": p, "reason": r} for p, r in skipped.items()]}


def read_worker_log(path: Path) -> tuple[list[dict], dict[str, str]]:
    """The configuration records and the skipped precisions of a worker's dllogger file."""
    records, skipped = [], {}
    for record in read_records(path):
        if record.get("type") != "LOG":
            continue
        if record["step"] == [RECORD]:
            records.append(record["data"])
        elif record["step"] == "PARAMETER" and "skipped" in record["data"]:
            skipped[record["data"]["precision"]] = record["data"]["skipped"]
    return records, skipped


def run(config: dict, data_dir: str, output: str | Path, launcher: str | None = None) -> dict:
    """Measure every rank count (a worker each) and write OUTPUT/train.json; return it."""
    from effnet.core import environment
    from effnet.core.atomic import atomic_open, write_json
    from effnet.core.errors import UserError
    from effnet.models import native_size

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    config_path = output / "train.config.yaml"
    with atomic_open(config_path, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    records, skipped = [], {}
    for count in rank_counts(config):
        log = output / f"train-{count}-ranks.dllog.json"
        log.unlink(missing_ok=True)
        template = launcher or (LOCAL_LAUNCHER if count > 1 else "")
        horovodrun = shlex.quote(str(Path(sys.executable).with_name("horovodrun")))  # this environment's
        command = [*shlex.split(template.format(ranks=count, horovodrun=horovodrun)), sys.executable, "-m", "effnet",
                   "benchmark", "train",
                   "--worker", "--config", str(config_path), "--data", str(data_dir), "--output", str(log)]
        print("benchmark:", shlex.join(command), file=sys.stderr, flush=True)
        code = subprocess.run(command).returncode
        if code != 0 or not log.exists():
            raise UserError(f"the {count}-rank training benchmark failed (exit status {code}): see its output above")
        found, why = read_worker_log(log)
        records += found
        skipped.update(why)
    b = config["benchmark"]
    model = config["model"]
    result = {"kind": "train", "arch": model["arch"], "image_size": model["image_size"] or native_size(model["arch"]),
              "data": b["data"], "warmup_steps": b["warmup_steps"], "steps": b["steps"],
              "method": "per step: forward, backward, Horovod allreduce, optimizer and EMA update, to the global "
                        "step on the host; img/s = batch per rank / mean step seconds, summed over ranks",
              **summarize(records, skipped), "environment": environment.describe(),
              "config": json.loads(json.dumps(config))}
    write_json(output / layout.BENCHMARK_RESULTS["train"], result)
    return result
