# After training: metrics on the validation split, a servable export, predictions on image files.
# Each stage writes its declared output last (evaluate, infer) or renames it into place whole
# (export), so a killed stage leaves nothing a rerun would trust.

# SLURM/local resources and the srun/Pyxis launch of each stage, from config['cluster'] (effnet.cluster.requests)
from effnet.cluster.requests import attempts, launch_prefix, rule_resources


rule evaluate:
    input:
        summary=train_summary,
        records=of_run_data(records_manifest),
        index=of_run_data(index_summary),
    output:
        metrics=eval_metrics,
        confusion=report(eval_confusion, category="Evaluation", labels={"plot": "confusion matrix"}),
    params:
        run=lambda wildcards, input: str(Path(input.summary).parent),
        records=lambda wildcards, input: str(Path(input.records).parent),
        index=lambda wildcards, input: str(Path(input.index).parent),
        config=config_overrides("eval", "data.backend"),
    resources:
        **rule_resources(config, "evaluate"),
        launch=lambda wildcards, attempt: launch_prefix(run_config(wildcards), "evaluate", attempt=attempt),
    retries: attempts(config, workflow.is_main_process)
    log:
        f"{logs}/evaluate.log",
    shell:
        KEEP_LOG
        + "{resources.launch} python -m effnet evaluate --model {params.run:q} --data {params.records:q} "
        "--index {params.index:q} --output {output.metrics:q} --confusion-png {output.confusion:q} "
        "{params.config} > {log:q} 2>&1"


rule export:
    input:
        train_summary,
    output:
        directory(export_dir),
    params:
        run=parent_of_input,
        weights=run_value("eval.weights"),
        top_k=run_value("export.top_k"),
        onnx=lambda wildcards: "--onnx" if run_config(wildcards)["export"]["onnx"] else "",
    resources:
        **rule_resources(config, "export"),
        launch=lambda wildcards, attempt: launch_prefix(run_config(wildcards), "export", attempt=attempt),
    retries: attempts(config, workflow.is_main_process)
    log:
        f"{logs}/export.log",
    shell:
        KEEP_LOG
        + "{resources.launch} python -m effnet export --model {params.run:q} --output {output:q} --weights {params.weights:q} "
        "--top-k {params.top_k:q} {params.onnx} > {log:q} 2>&1"


rule infer:
    input:
        model=export_dir,
        images=infer_input,
    output:
        predictions,
    params:
        images=infer_images,
        top_k=run_value("infer.top_k"),
        batch_size=run_value("infer.batch_size"),
    resources:
        **rule_resources(config, "infer"),
        launch=lambda wildcards, attempt: launch_prefix(run_config(wildcards), "infer", attempt=attempt),
    retries: attempts(config, workflow.is_main_process)
    log:
        f"{logs}/infer.log",
    shell:
        KEEP_LOG
        + "{resources.launch} python -m effnet infer --model {input.model:q} --images {params.images:q} --output {output:q} "
        "--top-k {params.top_k:q} --batch-size {params.batch_size:q} > {log:q} 2>&1"
