"""Batch runs: a config's ``runs:`` and ``sweep:`` sections as named, merged and validated run configs.

``runs: {name: overrides}`` merges each run's overrides over the rest of the config, key by key as an override
file does; ``sweep: {dotted.key: [values]}`` gives the product of the values, named after them
(``lr_init-0.01_seed-1``); with both, every run is swept (``b4_seed-1``). Each run lives in
``run_dir/runs/<name>/`` (``layout.run_root``); runs whose data sections make the same records share one prepare
and one index in ``run_dir/data/<source>-<digest>/`` (``layout.data_root``). The runs share the base config's
cluster section: each rule's SLURM request is one per rule. ``plan`` gives the workflow a single run as a batch
of one.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effnet.core import layout
from effnet.core.config import BATCH_KEYS, ConfigError, merge, set_dotted, validate

# data keys that do not change the records: backend picks the reader, workers how many processes write them
RECORD_NEUTRAL_DATA_KEYS = ("backend", "workers")
UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def expand(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{run name: its validated config, run_dir its own directory} of a validated config (defaults filled) with
    ``runs:`` or ``sweep:``, in the order written; {} for a config without either (a single run). ConfigError
    names the run (``runs.<name>``, ``sweep point <name>``) and the key."""
    if not any(config.get(key) for key in BATCH_KEYS):
        return {}
    base = {key: value for key, value in config.items() if key not in BATCH_KEYS}
    overrides: dict[str, tuple[str, dict]] = {}
    for run, run_overrides in (config.get("runs") or {"": {}}).items():
        nested = [key for key in BATCH_KEYS if key in run_overrides]
        if nested:
            raise ConfigError(f"runs.{run}: {nested[0]}: a run cannot hold runs or a sweep; put {nested[0]} at "
                              "the top level, where it applies to every run")
        for point, sweep_overrides in _sweep_points(config.get("sweep") or {}):
            name = "_".join(part for part in (run, point) if part)
            if name in overrides:
                raise ConfigError(f"sweep: two runs would be named {name!r}: give the values distinct names")
            source = " at ".join(filter(None, (run and f"runs.{run}", point and f"sweep point {point}")))
            overrides[name] = source, merge(copy.deepcopy(run_overrides), sweep_overrides)
    return {name: _run_config(base, name, source, extra) for name, (source, extra) in overrides.items()}


def _sweep_points(sweep: dict[str, list]) -> list[tuple[str, dict]]:
    """(name, nested overrides) of every point of the product of the sweep's values."""
    keys = list(sweep)
    short = [key.rsplit(".", 1)[-1] for key in keys]
    labels = [s if short.count(s) == 1 else key.replace(".", "-") for s, key in zip(short, keys)]
    points = []
    for values in itertools.product(*(sweep[key] for key in keys)):
        name = "_".join(f"{label}-{_name(value)}" for label, value in zip(labels, values))
        nested: dict[str, Any] = {}
        for key, value in zip(keys, values):
            set_dotted(nested, key, value)
        points.append((name, nested))
    return points


def _name(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (bool, type(None))) else str(value)
    return UNSAFE.sub("-", text).strip("-") or "x"


def _run_config(base: dict, name: str, source: str, extra: dict) -> dict:
    if "run_dir" in extra:
        raise ConfigError(f"{source}: run_dir: a run lives in run_dir/{layout.BATCH_RUNS}/{name}/; set run_dir once, "
                          "at the top level")
    config = validate(merge(copy.deepcopy(base), copy.deepcopy(extra)), source)
    changed = sorted(flatten(config["cluster"]).items() ^ flatten(base["cluster"]).items())
    if changed:
        raise ConfigError(f"{source}: cluster.{changed[0][0]}: runs share the top level's cluster section (each "
                          "rule's SLURM request is one per rule); set it there")
    root = str(base["run_dir"])
    config["run_dir"] = str(layout.run_root(root, name))
    if config["cluster"]["container_image"]:  # a run's container reads the shared records beside its directory
        shared = os.path.abspath(root)
        mounts = config["cluster"]["container_mounts"]
        config["cluster"]["container_mounts"] = ",".join(filter(None, (mounts, f"{shared}:{shared}")))
    return config


def flatten(node: Any, prefix: str = "") -> dict[str, str]:
    """{dotted key: its value as JSON} of every leaf of a nested config."""
    if not isinstance(node, dict):
        return {prefix: json.dumps(node, sort_keys=True)}
    return {dotted: text for key, value in node.items()
            for dotted, text in flatten(value, f"{prefix}.{key}" if prefix else key).items()}


def data_key(config: dict[str, Any]) -> str:
    """The name of the records a config's data section makes: its source and a digest of the keys that
    change what prepare writes (``demo-1a2b3c4d``)."""
    data = {key: value for key, value in config["data"].items() if key not in RECORD_NEUTRAL_DATA_KEYS}
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]
    return f"{data['source']}-{digest}"


def data_configs(runs: dict[str, dict], run_dir: str | Path) -> dict[str, dict]:
    """{data key: the config its data stages run with (the first run's with that key, run_dir
    ``run_dir/data/<key>``)}."""
    configs: dict[str, dict] = {}
    for config in runs.values():
        key = data_key(config)
        if key not in configs:
            configs[key] = {**config, "run_dir": str(layout.data_root(run_dir, key))}
    return configs


@dataclass(frozen=True)
class Batch:
    """The runs one config plans, as the workflow's rules see them. A single run is a batch of one, named "",
    whose root is run_dir itself; so are its data stages' (data key "")."""

    config: dict[str, Any]  # the top level's (the comparison of the runs)
    runs: dict[str, dict]  # run name -> its config
    data: dict[str, dict]  # data key -> the config of its data stages
    data_of: dict[str, str]  # run name -> its data key
    run_root: str  # a run's root in rule paths: run_dir/runs/{run}, or run_dir
    data_root: str  # a data section's root in rule paths: run_dir/data/{data}, or run_dir

    @property
    def several(self) -> bool:
        """Whether the runs are a batch of their own (runs:/sweep:), compared in run_dir/report/."""
        return "" not in self.runs

    def job_config(self, wildcards) -> dict[str, Any]:
        """The config of a rule's job: its data section's ({data}), its run's ({run}), else the top level's."""
        data = getattr(wildcards, "data", None)
        return self.data[data] if data is not None else self.runs.get(getattr(wildcards, "run", ""), self.config)

    def each_run(self, path: str) -> list[str]:
        """``path`` (a rule path with {run}) of every run."""
        return [path.replace("{run}", name) for name in self.runs]

    def each_data(self, path: str) -> list[str]:
        """``path`` (a rule path with {data}) of every distinct data section."""
        return [path.replace("{data}", key) for key in self.data]

    def of_run_data(self, path: str, wildcards) -> str:
        """``path`` (a data stage's, with {data}) of the records the run of ``wildcards`` trains on."""
        return path.replace("{data}", self.data_of[getattr(wildcards, "run", "")])


def plan(config: dict[str, Any]) -> Batch:
    """The batch a validated config plans (``expand``), a single run as a batch of one."""
    run_dir = config["run_dir"]
    runs = expand(config)
    if not runs:
        return Batch(config, {"": config}, {"": config}, {"": ""}, str(layout.run_root(run_dir)),
                     str(layout.data_root(run_dir)))
    return Batch(config, runs, data_configs(runs, run_dir), {name: data_key(run) for name, run in runs.items()},
                 str(layout.run_root(run_dir, "{run}")), str(layout.data_root(run_dir, "{data}")))
