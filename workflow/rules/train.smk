# Training: one Horovod job that resumes from its checkpoints. Only the final model and the summary
# (written last) are declared outputs: the checkpoints live outside them, because Snakemake deletes
# the outputs of a failed job, and a job stopped by a time limit (exit status 75, after writing a
# checkpoint) must keep them for the retry (`--retries`) that resumes it.


rule train:
    input:
        records=of_run_data(records_manifest),
        index=of_run_data(index_summary),  # every record's CRCs checked before a GPU hour is spent
        init=init_weights,
    output:
        model=train_model,
        summary=train_summary,
    params:
        records=lambda wildcards, input: str(Path(input.records).parent),
        index=lambda wildcards, input: str(Path(input.index).parent),
        out=parent_of_output,
        config=config_overrides("data", "model", "train", "eval.batch_size"),
    threads: workflow.cores
    resources:
        **job_resources("train"),
    retries: RETRIES
    log:
        rule_log(run_root, "train"),
    shell:
        stage_shell(
            "train --data {params.records:q} --index {params.index:q} --output {params.out:q} {params.config}"
        )
