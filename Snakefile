# EfficientNet pipeline: prepare TFRecords -> DALI index -> train -> evaluate -> export -> infer ->
# benchmark -> report.
# Rules are thin calls of `python -m effnet <stage>`; the logic lives in the effnet package.
#   snakemake --cores all all                    run locally
#   snakemake --profile profiles/slurm all       run on a SLURM cluster
#   snakemake all -n --configfile config/imagenet-b0.yaml   plan a run without executing it
# A config with runs: or sweep: plans every run in one DAG (effnet.core.batch_runs; README, "Batch runs").
from snakemake.utils import min_version

min_version("9.0")


# The demo config, unless a preset is given with --configfile: then exactly the preset (Snakemake would
# otherwise deep-merge it over this file and demo values would leak into it). Several --configfile
# files merge in order, so an override file after the preset changes nested keys of it for one run.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


# Used only with --software-deployment-method apptainer (effnet.cluster.requests.apptainer_image). The SLURM
# profile uses Pyxis instead, and only when cluster.container_image is set.
container: apptainer_image(config)


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/serve.smk"
include: "workflow/rules/benchmark.smk"


rule all:
    input:
        BATCH.each_data(index_summary),
        BATCH.each_run(train_summary),
        BATCH.each_run(eval_metrics),
        BATCH.each_run(export_dir),
        predictions_of_each_run(),
        BATCH.each_run(str(report_dir / layout.REPORT_MARKDOWN)),
        rules.compare_runs.output if BATCH.several else [],
    default_target: True
