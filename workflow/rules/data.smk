# Data stages: the embedded demo set, TFRecord shards, DALI indexes; for batch runs one of each per distinct
# data section ({data}), which every run with that section reads.
# Shards and indexes are written atomically and skipped when already valid, so a
# killed stage resumes; only the manifests are declared outputs, which Snakemake
# deletes on failure while the finished shards stay.


rule demo_data:
    output:
        directory(demo_images),
    params:
        seed=data_value("seed"),
        per_class=data_value("demo_images_per_class"),
    resources:
        **job_resources("demo_data"),
    retries: RETRIES
    log:
        rule_log(data_root, "demo_data"),
    shell:
        stage_shell("demo-data --output {output:q} --seed {params.seed:q} --train-per-class {params.per_class:q}")


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
        **job_resources("prepare"),
    retries: RETRIES
    log:
        rule_log(data_root, "prepare"),
    shell:
        stage_shell(
            "prepare --source {params.source:q} --input {input:q} --output {params.out:q} "
            "--workers {threads} {params.options}"
        )


rule index:
    input:
        records_manifest,
    output:
        index_summary,
    params:
        records=parent_of_input,
        out=parent_of_output,
    resources:
        **job_resources("index"),
    retries: RETRIES
    log:
        rule_log(data_root, "index"),
    shell:
        stage_shell("index --tfrecords {params.records:q} --output {params.out:q}")
