"""Everything a report shows of one pipeline run, read from its run directory (``effnet.core.layout``).

A stage's output that is absent or unreadable becomes a line in ``RunData.missing`` naming the file
and the stage that writes it: the report then says what is missing instead of failing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from effnet.core import jsonfile, layout
from effnet.core.digests import file_sha256
from effnet.core.errors import UserError
from effnet.formats.dllog import read_log


@dataclass
class RunData:
    """One run's outputs (None where missing) and what is missing."""

    run_dir: Path
    summary: dict | None = None
    train_log: list[dict] = field(default_factory=list)
    config_sha256: str | None = None
    config: dict | None = None  # train/config.yaml: the config the train stage ran with
    eval_metrics: dict | None = None
    bench_train: dict | None = None
    bench_inference: dict | None = None
    missing: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.run_dir.name or str(self.run_dir)


def _json(path: Path, stage: str, missing: list[str]) -> dict | None:
    try:
        return jsonfile.read(path, f"not there (written by the {stage} stage)")
    except UserError as exc:
        missing.append(str(exc))
    return None


def collect(run_dir: str | Path) -> RunData:
    """Read ``run_dir``'s train, evaluate and benchmark outputs; UserError if it is not a directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    data = RunData(run_dir)
    train = Path(run_dir) / layout.TRAIN
    data.summary = _json(train / layout.TRAIN_SUMMARY, "train", data.missing)
    log = train / layout.TRAIN_LOG
    try:
        data.train_log, cut = read_log(log)
        if cut:
            data.missing.append(f"{log}: line{'s' * (len(cut) > 1)} {', '.join(map(str, cut))} cut short (a writer "
                                f"killed, or its disk full): the other {len(data.train_log)} records are shown")
    except FileNotFoundError:
        data.missing.append(f"{log}: not there (written by the train stage)")
    except (OSError, ValueError) as exc:
        data.missing.append(f"{log}: unreadable ({exc})")
    if (train / layout.TRAIN_CONFIG).is_file():
        data.config_sha256 = file_sha256(train / layout.TRAIN_CONFIG)
        data.config = yaml.safe_load((train / layout.TRAIN_CONFIG).read_text())
    data.eval_metrics = _json(Path(run_dir) / layout.EVALUATE / layout.EVAL_METRICS, "evaluate", data.missing)
    bench = Path(run_dir) / layout.BENCHMARK
    data.bench_train = _json(bench / layout.BENCHMARK_RESULTS["train"], "benchmark train", data.missing)
    data.bench_inference = _json(bench / layout.BENCHMARK_RESULTS["inference"], "benchmark inference", data.missing)
    return data


def training_curve(records: list[dict]) -> dict:
    """Per logged step of the train log: epoch (fractional), loss, top1, lr, stage; per evaluation: epoch,
    eval_top1; ``stages``: the run's stages (``effnet.stages.train.stagewise``; [] in logs from before them).

    A resumed run logs some steps twice (after its last checkpoint, before the kill): the last record wins."""
    start = next((r["data"] for r in records if r.get("type") == "LOG" and r["step"] == "PARAMETER"
                  and "updates_per_epoch" in r["data"]), {})
    per_epoch = start.get("updates_per_epoch")
    steps, evals = {}, {}
    for r in records:
        if r.get("type") != "LOG" or not isinstance(r["step"], list):
            continue
        if len(r["step"]) == 2 and "loss" in r["data"]:
            steps[r["step"][1]] = r["data"]
        elif len(r["step"]) == 1 and "eval_top1" in r["data"]:
            evals[r["step"][0]] = r["data"]
    order = sorted(steps)
    return {
        "step": order,
        "epoch": [s / per_epoch if per_epoch else None for s in order],
        "loss": [steps[s]["loss"] for s in order], "top1": [steps[s]["top1"] for s in order],
        "lr": [steps[s]["lr"] for s in order], "img_per_sec": [steps[s]["img_per_sec"] for s in order],
        "stage": [steps[s].get("stage", 0) for s in order],
        "eval_epoch": sorted(evals), "eval_top1": [evals[e]["eval_top1"] for e in sorted(evals)],
        "stages": start.get("stages", []),
    }


def training_seconds(records: list[dict]) -> float | None:
    """Wall time of training over every attempt: each attempt's logger restarts its elapsed time."""
    total, attempt = 0.0, None
    for r in records:
        if r.get("type") == "LOG" and r["step"] == "PARAMETER" and "world_size" in r["data"]:
            total += attempt or 0.0
            attempt = 0.0
        if attempt is not None:
            attempt = max(attempt, float(r.get("elapsedtime", 0)))
    return total + attempt if attempt is not None else None
