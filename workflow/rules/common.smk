# Configuration checks and the paths every rule shares.
import shlex
from pathlib import Path

import yaml

from snakemake.utils import validate


validate(config, str(Path(workflow.basedir) / "effnet/schemas/config.schema.yaml"))

RUN_DIR = Path(config["run_dir"])
DATA = config["data"]

demo_images = str(RUN_DIR / "demo-images")
records_manifest = str(RUN_DIR / "tfrecords" / "manifest.json")
index_summary = str(RUN_DIR / "dali-index" / "index.json")
train_model = str(RUN_DIR / "train" / "model.keras")
train_summary = str(RUN_DIR / "train" / "train_summary.json")
logs = str(RUN_DIR / "logs")


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
            options.append(f"--{key.replace('_', '-')} {DATA[key]}")
    if DATA["skip_corrupt"]:
        options.append("--skip-corrupt")
    return " ".join(options)


def config_overrides(*sections):
    """`--set SECTION=<json>` for each config section: the stage runs with exactly this workflow's
    (validated, defaults filled) values, and a changed value changes the params, so the rule reruns."""
    def flow(section):  # one-line YAML: JSON's 5e-06 would read back as a string in YAML 1.1
        return yaml.safe_dump(config[section], default_flow_style=True, width=1 << 20).strip()

    return " ".join(f"--set {section}={shlex.quote(flow(section))}" for section in sections)
