# After training: metrics on the validation split, a servable export, predictions on image files.
# Each stage writes its declared output last (evaluate, infer) or renames it into place whole
# (export), so a killed stage leaves nothing a rerun would trust.


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
        **job_resources("evaluate"),
    retries: RETRIES
    log:
        rule_log(run_root, "evaluate"),
    shell:
        stage_shell(
            "evaluate --model {params.run:q} --data {params.records:q} --index {params.index:q} "
            "--output {output.metrics:q} --confusion-png {output.confusion:q} {params.config}"
        )


rule export:
    input:
        train_summary,
    output:
        directory(export_dir),
    params:
        run=parent_of_input,
        weights=run_value("eval.weights"),
        top_k=run_value("export.top_k"),
        onnx=lambda wildcards: "--onnx" if job_config(wildcards)["export"]["onnx"] else "",
    resources:
        **job_resources("export"),
    retries: RETRIES
    log:
        rule_log(run_root, "export"),
    shell:
        stage_shell(
            "export --model {params.run:q} --output {output:q} --weights {params.weights:q} "
            "--top-k {params.top_k:q} {params.onnx}"
        )


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
        **job_resources("infer"),
    retries: RETRIES
    log:
        rule_log(run_root, "infer"),
    shell:
        stage_shell(
            "infer --model {input.model:q} --images {params.images:q} --output {output:q} "
            "--top-k {params.top_k:q} --batch-size {params.batch_size:q}"
        )
