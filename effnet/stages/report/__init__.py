"""``python -m effnet report``: a run's tables and plots as report.md, report.html and PNGs.

Reads RUN (a pipeline run directory, ``effnet.core.layout``): the train summary and dllogger log, the
evaluate metrics and the benchmark results. Writes to OUTPUT: ``report.md`` and ``report.html``
(the reference README's tables filled from this run, published figures beside ours where the
hardware matches, the environment, what is missing), and the plots (``effnet.stages.report.plots``: loss
and top-1 against the epoch, learning rate, throughput and latency against batch size, scaling
against rank count). ``--compare OTHER`` adds every figure of both runs side by side with ratios.
``--runs RUN [RUN ...]`` instead compares many runs (a batch's, ``effnet.core.batch_runs``): one table of every run's
arch, the keys that tell it apart and its figures, mean and standard deviation of each group that differs only
in train.seed, the best run named, and all runs' loss and validation top-1 curves in one plot.
A stage output that is missing is listed, not an error. Each file is written atomically.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from effnet.core import layout
from effnet.core.errors import UserError

STYLE = ("body{font-family:sans-serif;max-width:75em;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #bbb;padding:.25em .6em;"
         "text-align:right}th{background:#eee}td:first-child{text-align:left}img{max-width:100%}")


def _table(table, empty: str) -> str:
    from tabulate import tabulate

    headers, rows = table
    if not rows:
        return f"_{empty}_\n"
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True) + "\n"


def markdown(run, other=None, plots: dict[str, dict | None] | None = None) -> str:
    """The report of ``run`` (a ``collect.RunData``; ``other`` for --compare) as Markdown."""
    from effnet.stages.report import reference, tables

    s = run.summary or {}
    parts = [f"# EfficientNet run report: {run.name}\n",
             f"{s.get('arch', 'unknown model')} at {s.get('image_size', '?')} px, "
             f"{s.get('num_classes', '?')} classes. Published figures: {reference.SOURCE}; shown only where "
             "the GPU, model and image size match theirs. Their latency \"percentiles\" are means of the fastest "
             "batches; ours are true percentiles.\n"]
    if run.missing:
        parts.append("## Missing\n\nThese stage outputs are not there, so their tables and plots are left out:\n\n"
                     + "".join(f"- {m}\n" for m in run.missing))
    parts += ["## Training accuracy\n", _table(tables.accuracy(run), "no finished training run")]
    trained_stages = tables.stages(run)
    if trained_stages[1]:
        parts += ["### Stages\n", "Stage-wise training: each stage's images and regularisation (evaluation at "
                  f"{s['image_size']} px).\n", _table(trained_stages, "")]
    bench = run.bench_train or {}
    parts += ["## Training performance\n",
              (f"Benchmark: {bench['data']} data, {bench['warmup_steps']} warm-up steps left out, "
               f"{bench['steps']} timed steps per row; {bench['method']}.\n\n" if bench else ""),
              _table(tables.train_performance(run), "no training benchmark")]
    inf = run.bench_inference or {}
    parts += ["## Inference performance\n",
              (f"{inf['warmup_calls']} warm-up calls left out, {inf['calls']} timed calls per row; "
               f"{inf['method']}.\n\n" if inf else ""),
              _table(tables.inference(run), "no inference benchmark")]
    skipped = tables.skipped(run)
    if skipped[1]:
        parts += ["### Not measured on this host\n", _table(skipped, "")]
    if other is not None:
        parts += [f"## Compared with {other.name}\n", f"`{other.run_dir}`\n\n", _table(tables.compare(run, other), "")]
        if other.missing:
            parts.append("".join(f"- missing in {other.name}: {m}\n" for m in other.missing))
    parts += ["## Environment\n", _table(tables.environment(run), "")]
    drawn = [name for name, series in (plots or {}).items() if series is not None]
    if drawn:
        parts.append("## Plots\n\n" + "".join(f"![{Path(n).stem}]({n})\n\n" for n in drawn))
    return "\n".join(parts)


def markdown_of_runs(runs: list, drawn: dict | None) -> str:
    """The report comparing ``runs`` (``collect.RunData``) as Markdown."""
    from effnet.stages.report import tables

    best = tables.best(runs)
    parts = [f"# EfficientNet runs compared: {len(runs)} runs\n",
             f"Best: **{best.name}** ({100 * best.eval_metrics['top1']:.2f}% top-1 in the evaluate stage).\n"
             if best else "_No run is evaluated yet._\n",
             "Top-1 and top-5 of the evaluate stage; time to train over every attempt; training img/s over the "
             "whole run; inference latency at the smallest batch of the export (fp32). Seed groups: runs that "
             "differ only in train.seed, with the mean and sample standard deviation.\n",
             _table(tables.runs(runs), "no runs")]
    missing = [f"- {run.name}: {m}\n" for run in runs for m in run.missing]
    if missing:
        parts.append("## Missing\n\n" + "".join(missing))
    if drawn:
        parts.append(f"## Curves\n\n![runs]({layout.RUNS_PLOT})\n")
    return "\n".join(parts)


def _write_pages(output: Path, title: str, text: str) -> None:
    import markdown as md

    from effnet.core.atomic import atomic_open

    html = md.markdown(text, extensions=["tables"])
    with atomic_open(output / layout.REPORT_HTML, "w") as f:
        f.write(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
                f"<style>{STYLE}</style></head><body>\n{html}\n</body></html>\n")
    with atomic_open(output / layout.REPORT_MARKDOWN, "w") as f:
        f.write(text)


def write_runs(run_dirs: list[str | Path], output: str | Path) -> dict | None:
    """Write the report comparing ``run_dirs`` and its plot to ``output``; return the plot's series."""
    from effnet.stages.report import plots
    from effnet.stages.report.collect import collect, training_curve

    runs = [collect(run_dir) for run_dir in run_dirs]
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    drawn = plots.runs({run.name: training_curve(run.train_log) for run in runs}, output / layout.RUNS_PLOT)
    if drawn is None:
        (output / layout.RUNS_PLOT).unlink(missing_ok=True)
    _write_pages(output, "runs compared", markdown_of_runs(runs, drawn))
    return drawn


def write(run_dir: str | Path, output: str | Path, compare: str | Path | None = None) -> dict:
    """Write the report of ``run_dir`` (and the plots) to ``output``; return {file: series or None}."""
    from effnet.stages.report import plots
    from effnet.stages.report.collect import collect, training_curve

    run = collect(run_dir)
    other = collect(compare) if compare else None
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    curve = training_curve(run.train_log)
    drawn = {
        layout.TRAINING_PLOT: plots.training(curve, output / layout.TRAINING_PLOT),
        layout.LR_PLOT: plots.learning_rate(curve, output / layout.LR_PLOT),
        layout.THROUGHPUT_PLOT: plots.throughput(run.bench_train, run.bench_inference, output / layout.THROUGHPUT_PLOT),
        layout.LATENCY_PLOT: plots.latency(run.bench_inference, output / layout.LATENCY_PLOT),
        layout.SCALING_PLOT: plots.scaling(run.bench_train, output / layout.SCALING_PLOT),
    }
    for name, series in drawn.items():
        if series is None:  # a plot of an earlier report whose data is gone now would mislead
            (output / name).unlink(missing_ok=True)
    _write_pages(output, f"{run.name} report", markdown(run, other, drawn))
    return drawn


def main(args: argparse.Namespace) -> int:
    if args.runs:
        if args.compare:
            raise UserError("report: --compare sets one run beside --run; --runs compares its runs itself")
        drawn = write_runs(args.runs, args.output)
        print(f"report: {Path(args.output) / layout.REPORT_HTML} and {layout.REPORT_MARKDOWN} comparing "
              f"{len(args.runs)} runs, plot: "
              f"{layout.RUNS_PLOT if drawn else 'none (no training log)'}")
        return 0
    drawn = write(args.run, args.output, args.compare)
    print(f"report: {Path(args.output) / layout.REPORT_HTML} and {layout.REPORT_MARKDOWN}, plots: "
          f"{', '.join(n for n, s in drawn.items() if s is not None) or 'none (no data)'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="tables and plots of a run as Markdown, HTML and PNG",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="the pipeline's run directory (run_dir: train/, evaluate/, benchmark/)")
    which.add_argument("--runs", nargs="+", metavar="RUN", help="run directories to compare (a batch's runs)")
    p.add_argument("--compare", help="with --run: another run directory to set side by side")
    p.add_argument("--output", required=True, help="report directory")
    p.set_defaults(func=main)
