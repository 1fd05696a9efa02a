# EfficientNet pipeline: prepare TFRecords -> DALI index -> train -> evaluate -> export -> infer ->
# benchmark -> report.
# Rules are thin calls of `python -m effnet <stage>`; the logic lives in the effnet package.
#   snakemake --cores all all                    run locally
#   snakemake --profile profiles/slurm all       run on a SLURM cluster
#   snakemake all -n --configfile config/imagenet-b0.yaml   plan a run without executing it
# A config with runs: or sweep: plans every run in one DAG (effnet.sweeps; README, "Batch runs").
from snakemake.utils import min_version

min_version("9.0")


# The demo config, unless a preset is given with --configfile: then exactly the preset (Snakemake would
# otherwise deep-merge it over this file and demo values would leak into it). Several --configfile
# files merge in order, so an override file after the preset changes nested keys of it for one run.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


# Used only with --software-deployment-method apptainer: cluster.container_image, else the NGC image our
# Dockerfile builds on. The SLURM profile uses Pyxis instead, and only when container_image is set.
container: f"docker://{config['cluster']['container_image'] or 'nvcr.io/nvidia/tensorflow:25.02-tf2-py3'}"



include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/serve.smk"
include: "workflow/rules/benchmark.smk"


rule all:
    input:
        each_data(index_summary),
        each_run(train_summary),
        each_run(eval_metrics),
        each_run(export_dir),
        predictions_of_each_run(),
        each_run(str(report_dir / MARKDOWN)),
        rules.compare_runs.output if RUNS else [],
    default_target: True
