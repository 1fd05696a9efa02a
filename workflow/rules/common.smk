# Configuration checks and the paths every rule shares.
import re
import shlex
import signal
from pathlib import Path
from types import SimpleNamespace

import yaml

from snakemake.utils import validate

from effnet import benchmarks, layout, runs, sweeps


validate(config, str(Path(workflow.basedir) / "effnet/schemas/config.schema.yaml"))

if not workflow.is_main_process:
    # In a SLURM job the plugin runs this Snakemake as `srun -n1 snakemake ...`, in the step of the stage it
    # starts: the train job's SIGUSR1 (sbatch --signal) reaches it too, and would end it, the step and the
    # rank before its checkpoint. The stage handles the signal; Snakemake (and the shell, which inherits it)
    # ignores it.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)

RUN_DIR = Path(config["run_dir"])
# Batch runs (runs:/sweep:, effnet.sweeps): {name: its validated config}; {} for one run, whose paths have no
# wildcards. The per-run rules take {run} and run in run_dir/runs/{run}/; the data stages take {data} and write
# run_dir/data/{data}/, once per distinct data section.
RUNS = sweeps.expand(config)
DATA_CONFIGS = sweeps.data_configs(RUNS, RUN_DIR)
RUN_DATA = {name: sweeps.data_key(run) for name, run in RUNS.items()}
if RUNS:

    wildcard_constraints:
        run="|".join(map(re.escape, RUNS)),
        data="|".join(map(re.escape, DATA_CONFIGS)),

run_root = RUN_DIR / layout.RUNS / "{run}" if RUNS else RUN_DIR
data_root = RUN_DIR / layout.DATA / "{data}" if RUNS else RUN_DIR


def run_config(wildcards):
    """The config of a per-run rule's job."""
    return RUNS[wildcards.run] if RUNS else config


def data_config(wildcards):
    """The config of a data stage's job (the first run's with its data section)."""
    return DATA_CONFIGS[wildcards.data] if RUNS else config


def run_data_path(path, wildcards):
    """A data stage's output ``path`` in the directory of the run's records."""
    return path.replace("{data}", RUN_DATA[wildcards.run]) if RUNS else path


def of_run_data(path):
    """``run_data_path`` as a per-run rule's input function."""
    return lambda wildcards: run_data_path(path, wildcards)


def each_run(path):
    """``path`` of every run (one path for a single run)."""
    return [path.replace("{run}", name) for name in RUNS] if RUNS else [path]


def each_data(path):
    """``path`` of every distinct data section of the runs (one path for a single run)."""
    return [path.replace("{data}", key) for key in DATA_CONFIGS] if RUNS else [path]


demo_images = str(data_root / layout.DEMO_IMAGES)
records_manifest = str(data_root / layout.RECORDS / "manifest.json")
index_summary = str(data_root / layout.INDEX / "index.json")
data_logs = str(data_root / layout.LOGS)
train_model = str(run_root / layout.TRAIN / runs.RAW_MODEL)
train_summary = str(run_root / layout.TRAIN / runs.SUMMARY)
eval_metrics = str(run_root / layout.EVAL_METRICS)
eval_confusion = str(run_root / layout.EVAL_CONFUSION)
export_dir = str(run_root / layout.EXPORT)
predictions = str(run_root / layout.PREDICTIONS)
benchmark_train = str(run_root / layout.BENCHMARK / benchmarks.TRAIN)
benchmark_inference = str(run_root / layout.BENCHMARK / benchmarks.INFERENCE)
report_dir = run_root / layout.REPORT
logs = str(run_root / layout.LOGS)
# What each rule's shell starts with: every attempt's log is kept. Snakemake deletes a job's declared log as
# the job starts, so a retry would lose the failed attempt's; each attempt writes LOG, hard-linked to
# LOG.1, LOG.2, ... (one per attempt, counting up), which stay.
KEEP_LOG = ": > {log:q}; n=1; while [ -e {log:q}.$n ]; do n=$((n + 1)); done; ln {log:q} {log:q}.$n; "


for name, run in RUNS.items() or [("", config)]:
    if run["infer"]["top_k"] > run["export"]["top_k"]:
        where = f"runs.{name}: " if name else ""
        raise ValueError(f"{where}infer.top_k={run['infer']['top_k']}: the export returns only export.top_k="
                         f"{run['export']['top_k']} classes")


def init_weights(wildcards):
    """train.init_from as the train stage tracks it (its change retrains): the file, a run's summary, a
    checkpoint's state; none without init_from."""
    init_from = run_config(wildcards)["train"]["init_from"]
    return runs.init_weights_file(init_from) if init_from else []


def infer_images(wildcards):
    """What the infer stage predicts: the configured images, else the source's validation images
    (None for tfds/tfrecords sources, which have no image files)."""
    run = run_config(wildcards)
    if run["infer"]["images"]:
        return run["infer"]["images"]
    if run["data"]["source"] == "demo":
        return f"{run_data_path(demo_images, wildcards)}/val"
    if run["data"]["source"] in ("folders", "imagenet"):
        return str(Path(run["data"]["input"]) / "val")
    return None


def infer_input(wildcards):
    """What infer waits for: the demo set (the demo_data output) or the images, which exist already."""
    images = infer_images(wildcards)
    demo = run_data_path(demo_images, wildcards)
    return demo if images == f"{demo}/val" else images or []


def predictions_of_each_run():
    """The infer stage's output of every run that has images to predict."""
    named = {name: SimpleNamespace(run=name) for name in RUNS} or {"": None}
    return [predictions.replace("{run}", name) for name, wildcards in named.items() if infer_images(wildcards)]


def parent_of_input(wildcards, input):
    """The directory of a rule's first input (a stage's data directory)."""
    return str(Path(input[0]).parent)


def parent_of_output(wildcards, output):
    """The directory of a rule's first output (a stage's data directory)."""
    return str(Path(output[0]).parent)


def source_input(wildcards):
    """The prepare stage's input directory: the generated demo set or the configured one."""
    data = data_config(wildcards)["data"]
    if data["source"] != "demo":
        return data["input"]
    return demo_images.replace("{data}", wildcards.data) if RUNS else demo_images


def prepare_source(wildcards):
    """The prepare stage's --source: the configured one; the demo set is written as image folders."""
    source = data_config(wildcards)["data"]["source"]
    return "folders" if source == "demo" else source


def prepare_options(wildcards):
    """Command-line options of the prepare stage taken from the `data` config section."""
    data = data_config(wildcards)["data"]
    options = [
        f"--train-shards {data['train_shards']}",
        f"--val-shards {data['val_shards']}",
        f"--seed {data['seed']}",
    ]
    for key in ("val_labels", "synsets", "tfds_name"):
        if data.get(key):
            options.append(f"--{key.replace('_', '-')} {shlex.quote(data[key])}")
    if data["skip_corrupt"]:
        options.append("--skip-corrupt")
    return " ".join(options)


def config_overrides(*keys):
    """`--set KEY=<yaml>` for each config section or dotted key, as a per-run rule's param: the stage runs
    with exactly its run's (validated, defaults filled) values, and only a change of a key the stage takes
    changes its params, so only the stages that use a key rerun when it changes."""
    return lambda wildcards: " ".join(f"--set {key}={shlex.quote(_yaml_value(run_config(wildcards), key))}"
                                      for key in keys)


def data_value(key):
    """A data stage's param: its data section's value of ``key``."""
    return lambda wildcards: data_config(wildcards)["data"][key]


def run_value(key):
    """A per-run rule's param: its run's value of the dotted ``key``."""
    return lambda wildcards: _lookup(run_config(wildcards), key)


def _lookup(node, key):
    for part in key.split("."):
        node = node[part]
    return node


def _yaml_value(config, key):
    node = _lookup(config, key)
    # one-line YAML: JSON's 5e-06 would read back as a string in YAML 1.1
    return yaml.safe_dump(node, default_flow_style=True, width=1 << 20).strip().removesuffix("\n...")
