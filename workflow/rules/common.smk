# Configuration checks and the paths every rule shares.
import shlex
import signal
from pathlib import Path

import yaml

from snakemake.utils import validate

from effnet import benchmarks, layout, runs


validate(config, str(Path(workflow.basedir) / "effnet/schemas/config.schema.yaml"))

if not workflow.is_main_process:
    # In a SLURM job the plugin runs this Snakemake as `srun -n1 snakemake ...`, in the step of the stage it
    # starts: the train job's SIGUSR1 (sbatch --signal) reaches it too, and would end it, the step and the
    # rank before its checkpoint. The stage handles the signal; Snakemake (and the shell, which inherits it)
    # ignores it.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)

RUN_DIR = Path(config["run_dir"])
DATA = config["data"]

demo_images = str(RUN_DIR / layout.DEMO_IMAGES)
records_manifest = str(RUN_DIR / layout.RECORDS / "manifest.json")
index_summary = str(RUN_DIR / layout.INDEX / "index.json")
train_model = str(RUN_DIR / layout.TRAIN / runs.RAW_MODEL)
train_summary = str(RUN_DIR / layout.TRAIN / runs.SUMMARY)
# train.init_from as the train stage tracks it (its change retrains): the file, a run's summary, a checkpoint's state
init_weights = runs.init_weights_file(config["train"]["init_from"]) if config["train"]["init_from"] else []
eval_metrics = str(RUN_DIR / layout.EVAL_METRICS)
eval_confusion = str(RUN_DIR / layout.EVAL_CONFUSION)
export_dir = str(RUN_DIR / layout.EXPORT)
predictions = str(RUN_DIR / layout.PREDICTIONS)
benchmark_train = str(RUN_DIR / layout.BENCHMARK / benchmarks.TRAIN)
benchmark_inference = str(RUN_DIR / layout.BENCHMARK / benchmarks.INFERENCE)
report_dir = RUN_DIR / layout.REPORT
logs = str(RUN_DIR / layout.LOGS)
# What each rule's shell starts with: every attempt's log is kept. Snakemake deletes a job's declared log as
# the job starts, so a retry would lose the failed attempt's; each attempt writes LOG, hard-linked to
# LOG.1, LOG.2, ... (one per attempt, counting up), which stay.
KEEP_LOG = ": > {log:q}; n=1; while [ -e {log:q}.$n ]; do n=$((n + 1)); done; ln {log:q} {log:q}.$n; "


if config["infer"]["top_k"] > config["export"]["top_k"]:
    raise ValueError(f"infer.top_k={config['infer']['top_k']}: the export returns only export.top_k="
                     f"{config['export']['top_k']} classes")


def _infer_images():
    """What the infer stage predicts: the configured images, else the source's validation images
    (None for tfds/tfrecords sources, which have no image files)."""
    if config["infer"]["images"]:
        return config["infer"]["images"]
    if DATA["source"] == "demo":
        return f"{demo_images}/val"
    if DATA["source"] in ("folders", "imagenet"):
        return str(Path(DATA["input"]) / "val")
    return None


infer_images = _infer_images()
# What infer waits for: the demo set (the demo_data output) or the images, which exist already.
infer_input = demo_images if infer_images == f"{demo_images}/val" else infer_images


def parent_of_input(wildcards, input):
    """The directory of a rule's first input (a stage's data directory)."""
    return str(Path(input[0]).parent)


def parent_of_output(wildcards, output):
    """The directory of a rule's first output (a stage's data directory)."""
    return str(Path(output[0]).parent)


def source_input(wildcards):
    """The prepare stage's input directory: the generated demo set or the configured one."""
    return demo_images if DATA["source"] == "demo" else DATA["input"]


def prepare_options(wildcards):
    """Command-line options of the prepare stage taken from the `data` config section."""
    options = [
        f"--train-shards {DATA['train_shards']}",
        f"--val-shards {DATA['val_shards']}",
        f"--seed {DATA['seed']}",
    ]
    for key in ("val_labels", "synsets", "tfds_name"):
        if DATA.get(key):
            options.append(f"--{key.replace('_', '-')} {shlex.quote(DATA[key])}")
    if DATA["skip_corrupt"]:
        options.append("--skip-corrupt")
    return " ".join(options)


def config_overrides(*keys):
    """`--set KEY=<yaml>` for each config section or dotted key: the stage runs with exactly this
    workflow's (validated, defaults filled) values, and only a change of a key the stage takes
    changes its params, so only the stages that use a key rerun when it changes."""
    def value(key):
        node = config
        for part in key.split("."):
            node = node[part]
        # one-line YAML: JSON's 5e-06 would read back as a string in YAML 1.1
        return yaml.safe_dump(node, default_flow_style=True, width=1 << 20).strip().removesuffix("\n...")

    return " ".join(f"--set {key}={shlex.quote(value(key))}" for key in keys)
