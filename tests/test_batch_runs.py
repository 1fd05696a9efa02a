"""Batch runs: runs: and sweep: expand into named, merged, validated run configs sharing equal data stages."""
from pathlib import Path
from types import SimpleNamespace

import pytest

from effnet.core import batch_runs
from effnet.core.config import ConfigError, load_config


def expanded(extra: dict) -> dict:
    return batch_runs.expand(load_config("config/config.yaml", {"run_dir": "out", **extra}, batch=True))


def test_a_config_without_runs_or_sweep_is_one_run():
    assert expanded({}) == {}


def test_runs_merge_key_by_key_and_a_sweep_gives_the_product_named_after_its_values():
    runs = expanded({"runs": {"b0": {}, "small": {"data": {"demo_images_per_class": 20}, "train": {"epochs": 3}}},
                     "sweep": {"train.lr_init": [0.01, 0.02], "train.seed": [0, 1]}})
    assert list(runs) == [f"{run}_lr_init-{lr}_seed-{seed}" for run in ("b0", "small") for lr in (0.01, 0.02)
                          for seed in (0, 1)]
    small = runs["small_lr_init-0.02_seed-1"]
    assert (small["train"]["epochs"], small["train"]["lr_init"], small["train"]["seed"]) == (3, 0.02, 1)
    assert small["train"]["batch_size"] == 32 and small["data"]["train_shards"] == 4  # the rest is the base's
    assert small["run_dir"] == "out/runs/small_lr_init-0.02_seed-1" and "runs" not in small and "sweep" not in small
    assert runs["b0_lr_init-0.01_seed-0"]["data"]["demo_images_per_class"] == 100


def test_equal_data_sections_share_records_and_other_data_gets_its_own():
    runs = expanded({"runs": {"a": {"train": {"seed": 1}}, "b": {"data": {"backend": "dali"}},
                              "c": {"data": {"demo_images_per_class": 20}}}})
    keys = {name: batch_runs.data_key(run) for name, run in runs.items()}
    assert keys["a"] == keys["b"] != keys["c"]  # the backend reads records, it does not change them
    assert keys["a"].startswith("demo-")
    data = batch_runs.data_configs(runs, "out")
    assert list(data) == [keys["a"], keys["c"]] and data[keys["c"]]["run_dir"] == f"out/data/{keys['c']}"


def test_sweep_keys_with_one_last_part_are_named_in_full():
    runs = expanded({"sweep": {"data.seed": [0], "train.seed": [1, 2]}})
    assert list(runs) == ["data-seed-0_train-seed-1", "data-seed-0_train-seed-2"]


@pytest.mark.parametrize("extra, message", [
    ({"runs": {"fast": {"train": {"lr_init": "high"}}}}, "runs.fast: invalid configuration:\n  train.lr_init: 'high'"),
    ({"sweep": {"train.epochs": [2, 0]}},
     "sweep point epochs-0: invalid configuration:\n  train.epochs: 0 is less than"),
    ({"runs": {"x": {"trian": {}}}}, "runs.x: invalid configuration:\n  <top level>: Additional properties"),
    ({"runs": {"x": {"cluster": {"gpus_per_node": 8}}}}, "runs.x: cluster.gpus_per_node: runs share"),
    ({"runs": {"x": {"run_dir": "elsewhere"}}}, "runs.x: run_dir: a run lives in run_dir/runs/x/"),
    ({"sweep": {"train.seed": [1, "1"]}}, "sweep: two runs would be named 'seed-1'"),
    ({"runs": {"b4": {"train": {"epochs": 0}}}, "sweep": {"train.seed": [0]}},
     "runs.b4 at sweep point seed-0: invalid configuration:\n  train.epochs: 0"),
    ({"runs": {"x": {"sweep": {"train.seed": [0]}}}}, "runs.x: sweep: a run cannot hold runs or a sweep"),
])
def test_a_bad_run_is_named_with_its_key(extra, message):
    with pytest.raises(ConfigError) as error:
        expanded(extra)
    assert message in str(error.value)


@pytest.mark.parametrize("extra, message", [
    ({"runs": {"a b": {}}}, "runs: 'a b' does not match"),
    ({"sweep": {"seed": [0]}}, "sweep: 'seed' does not match"),
    ({"sweep": {"train.seed": []}}, "sweep.train.seed: [] should be non-empty"),
])
def test_the_schema_checks_run_names_and_sweep_keys(extra, message):
    with pytest.raises(ConfigError) as error:
        load_config("config/config.yaml", extra, batch=True)
    assert message in str(error.value)


def test_a_stage_warns_that_it_ignores_the_runs_of_a_batch_config(tmp_path):
    batch = tmp_path / "seeds.yaml"
    batch.write_text(Path("config/config.yaml").read_text() + "sweep: {train.seed: [0, 1]}\n")
    with pytest.warns(UserWarning, match=f"{batch}: sweep ignored: a stage runs the top level's settings"):
        load_config(batch)
    assert load_config(batch, batch=True)["sweep"] == {"train.seed": [0, 1]}


def test_a_run_in_a_container_also_mounts_the_shared_records(tmp_path):
    runs = batch_runs.expand(load_config("config/config.yaml", {
        "run_dir": str(tmp_path), "sweep": {"train.seed": [0]},
        "cluster": {"container_image": "/img.sqsh", "container_mounts": "/data:/data"}}, batch=True))
    assert runs["seed-0"]["cluster"]["container_mounts"] == f"/data:/data,{tmp_path}:{tmp_path}"


def test_a_single_run_is_a_batch_of_one_whose_paths_are_run_dir_itself():
    config = load_config("config/config.yaml", {"run_dir": "out"}, batch=True)
    batch = batch_runs.plan(config)
    assert not batch.several and (batch.run_root, batch.data_root) == ("out", "out")
    assert batch.each_run("out/train/train_summary.json") == ["out/train/train_summary.json"]
    assert batch.of_run_data("out/tfrecords", SimpleNamespace()) == "out/tfrecords"
    assert batch.job_config(SimpleNamespace()) is config


def test_a_batch_plans_each_run_and_data_section_under_its_wildcard():
    config = load_config("config/config.yaml", {"run_dir": "out", "sweep": {"train.seed": [0, 1]}}, batch=True)
    batch = batch_runs.plan(config)
    key = batch_runs.data_key(batch.runs["seed-0"])
    assert batch.several and (batch.run_root, batch.data_root) == ("out/runs/{run}", "out/data/{data}")
    assert batch.each_run(batch.run_root) == ["out/runs/seed-0", "out/runs/seed-1"]
    assert batch.each_data(batch.data_root) == [f"out/data/{key}"]
    assert batch.of_run_data("out/data/{data}/tfrecords", SimpleNamespace(run="seed-1")) == f"out/data/{key}/tfrecords"
    assert batch.job_config(SimpleNamespace(run="seed-1"))["train"]["seed"] == 1
    assert batch.job_config(SimpleNamespace(data=key))["run_dir"] == f"out/data/{key}"
    assert batch.job_config(SimpleNamespace()) is config  # the comparison of the runs: the top level's
