# After training: this cluster's throughput and latency tables, the report of the whole run and, for batch
# runs, the report comparing them.
# Both benchmarks start after training (they would compete with it for the GPUs or cores) and take
# all of a machine's cores locally (threads), so nothing else runs while they time.


rule benchmark_train:
    input:
        records=of_run_data(records_manifest),
        trained=train_summary,
    output:
        benchmark_results["train"],
    params:
        records=lambda wildcards, input: str(Path(input.records).parent),
        out=parent_of_output,
        # the stage starts a worker per rank count, each through the launch wrapper (srun/Pyxis in a SLURM job)
        launcher=lambda wildcards: shlex.quote(
            launch_prefix(job_config(wildcards), "benchmark_train", ranks="{ranks}")
        ),
        config=config_overrides("data", "model", "train", "benchmark", "cluster.nodes", "cluster.gpus_per_node"),
    threads: workflow.cores
    resources:
        **job_resources("benchmark_train", driver=True),
    retries: RETRIES
    log:
        rule_log(run_root, "benchmark_train"),
    shell:
        stage_shell(
            "benchmark train --data {params.records:q} --output {params.out:q} --launcher {params.launcher} "
            "{params.config}"
        )


rule benchmark_inference:
    input:
        summary=train_summary,
        export=export_dir,
    output:
        benchmark_results["inference"],
    params:
        run=lambda wildcards, input: str(Path(input.summary).parent),
        out=parent_of_output,
        config=config_overrides("model", "train.xla", "export", "benchmark"),
    threads: workflow.cores
    resources:
        **job_resources("benchmark_inference"),
    retries: RETRIES
    log:
        rule_log(run_root, "benchmark_inference"),
    shell:
        stage_shell(
            "benchmark inference --model {params.run:q} --export {input.export:q} --output {params.out:q} "
            "{params.config}"
        )


rule report:
    input:
        train_summary,
        eval_metrics,
        *benchmark_results.values(),
    output:
        markdown=str(report_dir / layout.REPORT_MARKDOWN),
        html=report(str(report_dir / layout.REPORT_HTML), category="Report", labels=run_labels(file="run report")),
        plots=[
            report(str(report_dir / name), category="Plots", labels=run_labels(plot=name.removesuffix(".png")))
            for name in layout.REPORT_PLOTS
        ],
    params:
        run=lambda wildcards, input: str(Path(input[0]).parents[1]),  # the run's root, above train/
        out=parent_of_output,
    resources:
        **job_resources("report"),
    retries: RETRIES
    log:
        rule_log(run_root, "report"),
    shell:
        stage_shell("report --run {params.run:q} --output {params.out:q}")


# Only a batch's runs are compared: a single run's run_dir/report/ is its own report.
if BATCH.several:

    rule compare_runs:
        input:
            BATCH.each_run(train_summary),
            BATCH.each_run(eval_metrics),
            *map(BATCH.each_run, benchmark_results.values()),
        output:
            markdown=str(comparison_dir / layout.REPORT_MARKDOWN),
            html=report(
                str(comparison_dir / layout.REPORT_HTML), category="Report", labels={"file": "the runs compared"}
            ),
            curves=report(str(comparison_dir / layout.RUNS_PLOT), category="Plots", labels={"plot": "runs"}),
        params:
            runs=BATCH.each_run(str(run_root)),
            out=parent_of_output,
        resources:
            **job_resources("compare_runs"),
        retries: RETRIES
        log:
            rule_log(RUN_DIR, "compare_runs"),
        shell:
            stage_shell("report --runs {params.runs:q} --output {params.out:q}")
