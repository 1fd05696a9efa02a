# After training: this cluster's throughput and latency tables, the report of the whole run and, for batch
# runs, the report comparing them.
# Both benchmarks start after training (they would compete with it for the GPUs or cores) and take
# all of a machine's cores locally (threads), so nothing else runs while they time.

# SLURM/local resources and the srun/Pyxis launch of each stage, from config['cluster'] (effnet.cluster.requests)
from effnet.cluster.requests import attempts, launch_prefix, rule_resources
from effnet.report import HTML, MARKDOWN, plots

RUN_LABEL = {"run": "{run}"} if RUNS else {}  # each run's report in Snakemake's --report


rule benchmark_train:
    input:
        records=of_run_data(records_manifest),
        trained=train_summary,
    output:
        benchmark_train,
    params:
        records=lambda wildcards, input: str(Path(input.records).parent),
        out=parent_of_output,
        # the workers of each rank count start through the launch wrapper (srun/Pyxis in a SLURM job)
        launcher=lambda wildcards: shlex.quote(
            launch_prefix(run_config(wildcards), "benchmark_train", ranks="{ranks}")
        ),
        config=config_overrides("data", "model", "train", "benchmark", "cluster.nodes", "cluster.gpus_per_node"),
    threads: workflow.cores
    resources:
        **rule_resources(config, "benchmark_train"),
    retries: attempts(config, workflow.is_main_process)
    log:
        f"{logs}/benchmark_train.log",
    shell:
        KEEP_LOG
        + "python -m effnet benchmark train --data {params.records:q} --output {params.out:q} --launcher {params.launcher} "
        "{params.config} > {log:q} 2>&1"


rule benchmark_inference:
    input:
        summary=train_summary,
        export=export_dir,
    output:
        benchmark_inference,
    params:
        run=lambda wildcards, input: str(Path(input.summary).parent),
        out=parent_of_output,
        config=config_overrides("model", "train.xla", "export", "benchmark"),
    threads: workflow.cores
    resources:
        **rule_resources(config, "benchmark_inference"),
        launch=lambda wildcards, attempt: launch_prefix(run_config(wildcards), "benchmark_inference", attempt=attempt),
    retries: attempts(config, workflow.is_main_process)
    log:
        f"{logs}/benchmark_inference.log",
    shell:
        KEEP_LOG
        + "{resources.launch} python -m effnet benchmark inference --model {params.run:q} --export {input.export:q} "
        "--output {params.out:q} {params.config} > {log:q} 2>&1"


rule report:
    input:
        train_summary,
        eval_metrics,
        benchmark_train,
        benchmark_inference,
    output:
        markdown=str(report_dir / MARKDOWN),
        html=report(str(report_dir / HTML), category="Report", labels={**RUN_LABEL, "file": "run report"}),
        plots=[report(str(report_dir / name), category="Plots", labels={**RUN_LABEL, "plot": name.removesuffix(".png")})
               for name in plots.PLOTS],
    params:
        run=lambda wildcards, input: str(Path(input[0]).parents[1]),  # run_dir, above train/
        out=parent_of_output,
    resources:
        **rule_resources(config, "report"),
        launch=lambda wildcards, attempt: launch_prefix(run_config(wildcards), "report", attempt=attempt),
    retries: attempts(config, workflow.is_main_process)
    log:
        f"{logs}/report.log",
    shell:
        KEEP_LOG
        + "{resources.launch} python -m effnet report --run {params.run:q} --output {params.out:q} > {log:q} 2>&1"


if RUNS:

    rule compare_runs:
        input:
            each_run(train_summary),
            each_run(eval_metrics),
            each_run(benchmark_train),
            each_run(benchmark_inference),
        output:
            markdown=str(RUN_DIR / layout.REPORT / MARKDOWN),
            html=report(str(RUN_DIR / layout.REPORT / HTML), category="Report", labels={"file": "the runs compared"}),
            curves=report(str(RUN_DIR / layout.REPORT / plots.RUNS), category="Plots", labels={"plot": "runs"}),
        params:
            runs=each_run(str(run_root)),
            out=parent_of_output,
        resources:
            **rule_resources(config, "report"),
            launch=lambda wildcards, attempt: launch_prefix(config, "compare_runs", attempt=attempt),
        retries: attempts(config, workflow.is_main_process)
        log:
            str(RUN_DIR / layout.LOGS / "compare_runs.log"),
        shell:
            KEEP_LOG
            + "{resources.launch} python -m effnet report --runs {params.runs:q} --output {params.out:q} > {log:q} 2>&1"
