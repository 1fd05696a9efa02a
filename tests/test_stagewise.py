"""Stage-wise training's schedule: stages as data, bad stage keys refused before any data is read."""
import re
import subprocess
import sys

import pytest
import yaml

from conftest import HANG_GUARD, REPO, SIDE_BY_SIDE, TEST_ARCH, run_cli
from effnet.core.config import ConfigError, load_config
from effnet.core.errors import UserError
from effnet.data import autoaugment
from effnet.stages.train import stagewise


def train_section(**keys) -> dict:
    return load_config(REPO / "config/config.yaml", {"train": keys})["train"]


def test_the_factors_move_linearly_from_the_base_values_to_the_final_ones_and_the_last_stage_takes_the_rest():
    train = train_section(epochs=10, stages=3, base_image_size=128, augment="randaugment", randaug_magnitude=15,
                          base_randaug_magnitude=5, mixup_alpha=0.5, base_mixup_alpha=0.0, cutmix_alpha=0.4)
    stages = stagewise.schedule(train, 300)
    assert [(s.index, s.first_epoch, s.end_epoch) for s in stages] == [(0, 0, 3), (1, 3, 6), (2, 6, 10)]
    assert [s.image_size for s in stages] == [128, 214, 300]  # 214 = round(128 + 172 / 2)
    assert [s.randaug_magnitude for s in stages] == [5, 10, 15]
    assert [s.mixup_alpha for s in stages] == [0.0, 0.25, 0.5]
    assert [s.cutmix_alpha for s in stages] == [0.4] * 3  # no base value: the final one throughout
    assert stagewise.remaining(stages, 4) == stages[1:] and stagewise.remaining(stages, 10) == ()


def test_halves_round_up_to_whole_levels():
    train = train_section(epochs=5, stages=5, base_image_size=32, augment="randaugment", base_randaug_magnitude=5,
                          randaug_magnitude=15)
    assert [s.randaug_magnitude for s in stagewise.schedule(train, 64)] == [5, 8, 10, 13, 15]  # 7.5 and 12.5 up


def test_one_stage_is_the_run_as_it_was():
    (stage,) = stagewise.schedule(train_section(epochs=4, mixup_alpha=0.2), 224)
    assert (stage.first_epoch, stage.end_epoch, stage.image_size, stage.mixup_alpha) == (0, 4, 224, 0.2)
    assert stage.randaug_magnitude == autoaugment.RANDAUGMENT_MAGNITUDE  # the key's default is the constant's


def test_the_reference_v2_s_magnitudes_round_to_whole_levels():
    train = train_section(epochs=350, stages=4, base_image_size=128, augment="randaugment", randaug_magnitude=15,
                          base_randaug_magnitude=5)
    stages = stagewise.schedule(train, 300)
    assert [s.randaug_magnitude for s in stages] == [5, 8, 12, 15]  # linspace: 5, 8.33, 11.67, 15
    assert [s.image_size for s in stages] == [128, 185, 243, 300]
    assert [s.end_epoch - s.first_epoch for s in stages] == [87, 87, 87, 89]


@pytest.mark.parametrize("keys, size, message", [
    (dict(stages=1, base_image_size=64, base_mixup_alpha=0.1), 128,
     "train.base_image_size, train.base_mixup_alpha: first-stage values, but train.stages is 1"),
    (dict(stages=3, epochs=2, base_image_size=64), 128, "train.stages: 3 stages need at least 3 epochs"),
    (dict(stages=2, epochs=4), 128, "train.stages: 2 stages need train.base_image_size"),
    (dict(stages=2, epochs=4, base_image_size=160), 128,
     "train.base_image_size: 160 is above the final size, 128 (model.image_size"),
    (dict(stages=2, epochs=4, base_image_size=64, augment="autoaugment", base_randaug_magnitude=5), 128,
     "train.base_randaug_magnitude: set, but train.augment is autoaugment, not randaugment"),
])
def test_stage_keys_that_cannot_work_together_are_named(keys, size, message):
    with pytest.raises(UserError, match=re.escape(message)):
        stagewise.schedule(train_section(**keys), size)


def test_the_schema_refuses_a_stage_count_below_1_and_a_first_size_below_32():
    with pytest.raises(ConfigError) as error:
        train_section(stages=0, base_image_size=16)
    assert "train.stages: 0 is less than the minimum of 1" in str(error.value)
    assert "train.base_image_size: 16 is less than the minimum of 32" in str(error.value)


def test_the_train_stage_refuses_bad_stage_keys_before_reading_any_data(tmp_path):
    proc = run_cli("train", "--data", str(tmp_path / "no-records-here"), "--output", str(tmp_path / "run"),
                   "--set", f"model.arch={TEST_ARCH}", "--set", "model.image_size=64", "--set", "train.stages=2",
                   "--set", "train.base_image_size=96")
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: train.base_image_size: 96 is above the final size, 64 (model.image_size, or the arch's "
                      "native size when null); stages grow the images"]  # not a missing-records error: no data read
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_workflow_refuses_bad_stage_keys_when_it_plans(tmp_path):
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["run_dir"] = str(tmp_path / "run")
    config["train"].update(stages=2, epochs=1, base_image_size=32)
    path = tmp_path / "stages.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "snakemake", SIDE_BY_SIDE, "-n", "--cores", "1", "--configfile",
                           str(path)], cwd=REPO, capture_output=True, text=True, timeout=HANG_GUARD)
    assert proc.returncode != 0
    assert "train.stages: 2 stages need at least 2 epochs, train.epochs is 1" in proc.stdout + proc.stderr
    assert not (tmp_path / "run").exists()
