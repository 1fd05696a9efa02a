# EfficientNet pipeline: prepare TFRecords -> DALI index -> train -> evaluate -> export -> infer -> report.
# Rules are thin calls of `python -m effnet <stage>`; the logic lives in the effnet package.
#   snakemake --cores all all                    run locally
#   snakemake --profile profiles/slurm all       run on a SLURM cluster
#   snakemake --configfile config/imagenet-b0.yaml -n all   plan a run without executing it
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


# Used with --software-deployment-method apptainer; the SLURM profile uses Pyxis instead.
container: f"docker://{config['cluster']['container_image']}"



include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"


rule all:
    input:
        index_summary,
        train_summary,
    default_target: True
