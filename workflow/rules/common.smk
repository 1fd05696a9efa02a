# Configuration checks, the paths every rule shares (effnet.core.layout) and the helpers every rule uses.
import re
import shlex
import signal
from pathlib import Path
from types import SimpleNamespace

import yaml

from snakemake.utils import validate

from effnet.cluster.requests import apptainer_image, attempts, launch_prefix, memory_mb, rule_resources
from effnet.core import batch_runs, layout
from effnet.core.config import get_dotted
from effnet.core.errors import UserError
from effnet.stages.train import stagewise


validate(config, str(Path(workflow.basedir) / "effnet/schemas/config.schema.yaml"))

if not workflow.is_main_process:
    # In a SLURM job the plugin runs this Snakemake as `srun -n1 snakemake ...`, in the step of the stage it
    # starts: the train job's SIGUSR1 (sbatch --signal) reaches it too, and would end it, the step and the
    # rank before its checkpoint. The stage handles the signal; Snakemake (and the shell, which inherits it)
    # ignores it.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)

RUN_DIR = Path(config["run_dir"])
# The runs this config plans (runs:/sweep:, effnet.core.batch_runs), a single run as a batch of one named "".
# A batch's per-run rules take {run} and run in run_dir/runs/{run}/, its data stages take {data} and write
# run_dir/data/{data}/, once per distinct data section; a single run's paths have no wildcards.
BATCH = batch_runs.plan(config)


wildcard_constraints:
    run="|".join(map(re.escape, BATCH.runs)),
    data="|".join(map(re.escape, BATCH.data)),


run_root = Path(BATCH.run_root)
data_root = Path(BATCH.data_root)
demo_images = str(data_root / layout.DEMO_IMAGES)
records_manifest = str(data_root / layout.RECORDS / layout.RECORDS_MANIFEST)
index_summary = str(data_root / layout.INDEX / layout.INDEX_SUMMARY)
train_model = str(run_root / layout.TRAIN / layout.RAW_MODEL)
train_summary = str(run_root / layout.TRAIN / layout.TRAIN_SUMMARY)
eval_metrics = str(run_root / layout.EVALUATE / layout.EVAL_METRICS)
eval_confusion = str(run_root / layout.EVALUATE / layout.EVAL_CONFUSION)
export_dir = str(run_root / layout.EXPORT)
predictions = str(run_root / layout.INFER / layout.PREDICTIONS)
benchmark_results = {kind: str(run_root / layout.BENCHMARK / name) for kind, name in layout.BENCHMARK_RESULTS.items()}
report_dir = run_root / layout.REPORT
comparison_dir = RUN_DIR / layout.REPORT  # a batch's runs compared
# What each rule's shell starts with: every attempt's log is kept. Snakemake deletes a job's declared log as
# the job starts, so a retry would lose the failed attempt's; each attempt writes LOG, hard-linked to
# LOG.1, LOG.2, ... (one per attempt, counting up), which stay.
KEEP_LOG = ": > {log:q}; n=1; while [ -e {log:q}.$n ]; do n=$((n + 1)); done; ln {log:q} {log:q}.$n; "
# Snakemake's retries of every rule (effnet.cluster.requests.attempts)
RETRIES = attempts(config, workflow.is_main_process)


for name, run in BATCH.runs.items():
    where = f"runs.{name}: " if name else ""
    if run["infer"]["top_k"] > run["export"]["top_k"]:
        raise ValueError(f"{where}infer.top_k={run['infer']['top_k']}: the export returns only export.top_k="
                         f"{run['export']['top_k']} classes")
    try:  # before prepare reads a byte (a null image_size, the arch's, is checked by the train stage)
        stagewise.check(run["train"], run["model"]["image_size"])
    except UserError as error:
        raise ValueError(f"{where}{error}") from None


def job_resources(rule, **launch_options):
    """A rule's SLURM/local resources (effnet.cluster.requests), its mem_mb grown after attempts that ended for
    memory, and ``launch``: the launch prefix of this attempt of its job, which runs the stage after the rule's
    attempts ledger agreed (workflow/scripts/launch.py)."""
    return {
        **rule_resources(config, rule),
        "mem_mb": lambda wildcards, attempt: memory_mb(job_config(wildcards), rule, attempt),
        "launch": lambda wildcards, attempt: launch_prefix(
            job_config(wildcards), rule, attempt=attempt, **launch_options
        ),
    }


def rule_log(root, rule):
    """The log of ``rule``'s attempt in a run's or data section's ``root`` (logs/<rule>.log)."""
    return str(layout.rule_log(root, rule))


def stage_shell(command):
    """A rule's shell: ``python -m effnet COMMAND`` under the launch prefix, this attempt's log kept."""
    return f"{KEEP_LOG}{{resources.launch}} python -m effnet {command} > {{log:q}} 2>&1"


def run_labels(**labels):
    """Labels of a run's file in Snakemake's --report, with the run's name in a batch."""
    return lambda wildcards: {"run": wildcards.run, **labels} if "run" in wildcards.keys() else labels


def job_config(wildcards):
    """The config of a rule's job: its run's, or its data section's (the first run's with that section)."""
    return BATCH.job_config(wildcards)


def of_run_data(path):
    """A data stage's output ``path`` in the records of the run, as a per-run rule's input function."""
    return lambda wildcards: BATCH.of_run_data(path, wildcards)


def init_weights(wildcards):
    """train.init_from as the train stage tracks it (its change retrains): the file, a run's summary, a
    checkpoint's state; none without init_from."""
    init_from = job_config(wildcards)["train"]["init_from"]
    return layout.init_from_file(init_from) if init_from else []


def infer_images(wildcards):
    """What the infer stage predicts: the configured images, else the source's validation images
    (None for tfds/tfrecords sources, which have no image files)."""
    run = job_config(wildcards)
    if run["infer"]["images"]:
        return run["infer"]["images"]
    if run["data"]["source"] == "demo":
        return f"{BATCH.of_run_data(demo_images, wildcards)}/val"
    if run["data"]["source"] in ("folders", "imagenet"):
        return str(Path(run["data"]["input"]) / "val")
    return None


def infer_input(wildcards):
    """What infer waits for: the demo set (the demo_data output) or the images, which exist already."""
    images = infer_images(wildcards)
    demo = BATCH.of_run_data(demo_images, wildcards)
    return demo if images == f"{demo}/val" else images or []


def predictions_of_each_run():
    """The infer stage's output of every run that has images to predict."""
    return [predictions.replace("{run}", name) for name in BATCH.runs if infer_images(SimpleNamespace(run=name))]


def parent_of_input(wildcards, input):
    """The directory of a rule's first input (a stage's data directory)."""
    return str(Path(input[0]).parent)


def parent_of_output(wildcards, output):
    """The directory of a rule's first output (a stage's data directory)."""
    return str(Path(output[0]).parent)


def source_input(wildcards):
    """The prepare stage's input directory: the generated demo set or the configured one."""
    data = job_config(wildcards)["data"]
    if data["source"] != "demo":
        return data["input"]
    return demo_images.replace("{data}", getattr(wildcards, "data", ""))


def prepare_source(wildcards):
    """The prepare stage's --source: the configured one; the demo set is written as image folders."""
    source = job_config(wildcards)["data"]["source"]
    return "folders" if source == "demo" else source


def prepare_options(wildcards):
    """Command-line options of the prepare stage taken from the `data` config section."""
    data = job_config(wildcards)["data"]
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
    return lambda wildcards: " ".join(
        f"--set {key}={shlex.quote(_yaml_value(job_config(wildcards), key))}" for key in keys
    )


def data_value(key):
    """A data stage's param: its data section's value of ``key``."""
    return lambda wildcards: job_config(wildcards)["data"][key]


def run_value(key):
    """A per-run rule's param: its run's value of the dotted ``key``."""
    return lambda wildcards: get_dotted(job_config(wildcards), key)


def _yaml_value(config, key):
    # one-line YAML: JSON's 5e-06 would read back as a string in YAML 1.1
    return (
        yaml.safe_dump(get_dotted(config, key), default_flow_style=True, width=1 << 20)
        .strip()
        .removesuffix("\n...")
    )
