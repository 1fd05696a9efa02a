"""Config validation: the shipped configs pass; each kind of mistake names its key."""
import subprocess
import sys

import pytest
import yaml

from conftest import HANG_GUARD, REPO
from effnet.core.config import ConfigError, load_config, validate

CONFIGS = sorted((REPO / "config").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    config = load_config(path)
    assert config["train"]["checkpoint_every"] >= 1  # defaults filled in


def test_defaults_are_filled():
    config = validate({"run_dir": "r", "data": {"source": "demo"}, "model": {"arch": "efficientnet-b3"}})
    assert config["train"]["lr_init"] == 0.005
    assert config["train"]["xla"] == "auto"
    assert config["eval"]["batch_size"] == 256
    assert config["model"]["image_size"] is None


def test_presets_reproduce_the_reference_recipe():
    b0 = load_config(REPO / "config/imagenet-b0.yaml")
    b4 = load_config(REPO / "config/imagenet-b4.yaml")
    assert (b0["model"]["arch"], b0["train"]["batch_size"]) == ("efficientnet-b0", 1024)
    assert (b4["model"]["arch"], b4["train"]["batch_size"], b4["train"]["mixup_alpha"]) == ("efficientnet-b4", 160, 0.2)
    for cfg in (b0, b4):
        t = cfg["train"]
        assert (t["epochs"], t["checkpoint_every"], t["lr_init"], t["lr_warmup_epochs"]) == (500, 5, 0.005, 5)
        assert (t["ema_decay"], t["label_smoothing"], t["weight_decay"]) == (0.9999, 0.1, 5e-6)
        assert (t["optimizer"], t["rmsprop_rho"], t["momentum"], t["epsilon"]) == ("rmsprop", 0.9, 0.9, 1e-3)
        assert (t["augment"], t["amp"], t["lr_decay"]) == ("autoaugment", True, "cosine")


def test_the_v2_s_preset_is_the_references_stage_wise_recipe():
    from effnet.stages.train import stagewise

    v2 = load_config(REPO / "config/imagenet-v2-s.yaml")
    m, t = v2["model"], v2["train"]
    assert (m["arch"], m["image_size"], m["bn_momentum"], m["batch_norm"]) == ("efficientnetv2-s", 300, 0.99, "sync")
    assert (t["epochs"], t["batch_size"], t["lr_init"], t["checkpoint_every"], v2["eval"]["batch_size"]) == (
        350, 460, 0.005, 10, 100)
    assert (t["augment"], t["amp"], t["xla"], t["ema_decay"]) == ("randaugment", True, "auto", 0.9999)
    stages = stagewise.schedule(t, m["image_size"])
    assert [(s.first_epoch, s.image_size, s.randaug_magnitude) for s in stages] == [
        (0, 128, 5), (87, 185, 8), (174, 243, 12), (261, 300, 15)]
    assert {(s.mixup_alpha, s.cutmix_alpha) for s in stages} == {(0.0, 0.0)}


def base():
    return yaml.safe_load((REPO / "config/config.yaml").read_text())


def mutate(path, value):
    config = base()
    *parents, last = path.split(".")
    node = config
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return config


@pytest.mark.parametrize("path, value, expected", [
    ("train.batch_size", "big", "train.batch_size: 'big' is not of type 'integer'"),
    ("train.batch_size", 0, "train.batch_size: 0 is less than the minimum of 1"),
    ("train.bogus_key", 1, "train: Additional properties are not allowed ('bogus_key' was unexpected)"),
    ("model.arch", "efficientnet-b9", "model.arch: 'efficientnet-b9' is not one of"),
    ("model.arch", KeyError, "model: 'arch' is a required property"),
    ("run_dir", KeyError, "<top level>: 'run_dir' is a required property"),
    ("data.source", "folders", "data: 'input' is a required property"),
    ("train.xla", "yes", "train.xla: 'yes' is not one of ['auto', True, False]"),
    ("run_dir", "/scratch/$(id)", "run_dir: '/scratch/$(id)' does not match"),
    ("data.input", "/data/`id`", "data.input: '/data/`id`' does not match"),
    ("data.val_labels", "/lustre/a,b", "data.val_labels: '/lustre/a,b' does not match"),
])
def test_bad_config_names_the_key(tmp_path, path, value, expected):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(mutate(path, value)))
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    message = str(info.value)
    assert str(bad) in message
    assert expected in message


def test_unreadable_yaml_names_the_file(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: cannot read configuration"):
        load_config(bad)


def test_snakemake_rejects_a_bad_config_naming_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(mutate("train.bogus_key", 1)))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(bad)],
        cwd=REPO, capture_output=True, text=True, timeout=HANG_GUARD)
    assert proc.returncode != 0
    assert "bogus_key" in proc.stdout + proc.stderr


def test_snakemake_refuses_a_run_dir_a_shell_would_expand_before_anything_runs(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--config",
                           f"run_dir={tmp_path}/$(touch {tmp_path}/expanded)"],
                          cwd=REPO, capture_output=True, text=True, timeout=HANG_GUARD)
    assert proc.returncode != 0
    assert "does not match" in proc.stdout + proc.stderr and "run_dir" in proc.stdout + proc.stderr
    assert not (tmp_path / "expanded").exists()

