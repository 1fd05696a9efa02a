# Data stages: the embedded demo set, TFRecord shards, DALI indexes; for batch runs one of each per distinct
# data section ({data}), which every run with that section reads.
# Shards and indexes are written atomically and skipped when already valid, so a
# killed stage resumes; only the manifests are declared outputs, which Snakemake
# deletes on failure while the finished shards stay.

# SLURM/local resources and the srun/Pyxis launch of each stage, from config['cluster'] (effnet.cluster.requests)
from effnet.cluster.requests import attempts, launch_prefix, rule_resources


rule demo_data:
    output:
        directory(demo_images),
    params:
        seed=data_value("seed"),
        per_class=data_value("demo_images_per_class"),
    resources:
        **rule_resources(config, "demo_data"),
        launch=lambda wildcards, attempt: launch_prefix(data_config(wildcards), "demo_data", attempt=attempt),
    retries: attempts(config, workflow.is_main_process)
    log:
        f"{data_logs}/demo_data.log",
    shell:
        KEEP_LOG
        + "{resources.launch} python -m effnet demo-data --output {output:q} --seed {params.seed:q} "
        "--train-per-class {params.per_class:q} > {log:q} 2>&1"


rule prepare:
    input:
        source_input,
    output:
        records_manifest,
    params:
        source=prepare_source,
        out=parent_of_output,
        options=prepare_options,
    threads: workflow.cores
    resources:
        **rule_resources(config, "prepare"),
        launch=lambda wildcards, attempt: launch_prefix(data_config(wildcards), "prepare", attempt=attempt),
    retries: attempts(config, workflow.is_main_process)
    log:
        f"{data_logs}/prepare.log",
    shell:
        KEEP_LOG
        + "{resources.launch} python -m effnet prepare --source {params.source:q} --input {input:q} --output {params.out:q} "
        "--workers {threads} {params.options} > {log:q} 2>&1"


rule index:
    input:
        records_manifest,
    output:
        index_summary,
    params:
        records=parent_of_input,
        out=parent_of_output,
    resources:
        **rule_resources(config, "index"),
        launch=lambda wildcards, attempt: launch_prefix(data_config(wildcards), "index", attempt=attempt),
    retries: attempts(config, workflow.is_main_process)
    log:
        f"{data_logs}/index.log",
    shell:
        KEEP_LOG
        + "{resources.launch} python -m effnet index --tfrecords {params.records:q} --output {params.out:q} > {log:q} 2>&1"
