# Training: one Horovod job that resumes from its checkpoints. Only the final model and the summary
# (written last) are declared outputs: the checkpoints live outside them, because Snakemake deletes
# the outputs of a failed job, and a job stopped by a time limit (exit status 75, after writing a
# checkpoint) must keep them for the retry (`--retries`) that resumes it.

# SLURM/local resources and the srun/Pyxis launch of each stage, from config['cluster'] (effnet.cluster.requests)
from effnet.cluster.requests import attempts, launch_prefix, rule_resources


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
        **rule_resources(config, "train"),
        launch=lambda wildcards, attempt: launch_prefix(run_config(wildcards), "train", attempt=attempt),
    retries: attempts(config, workflow.is_main_process)
    log:
        f"{logs}/train.log",
    shell:
        KEEP_LOG
        + "{resources.launch} python -m effnet train --data {params.records:q} --index {params.index:q} "
        "--output {params.out:q} {params.config} > {log:q} 2>&1"
