"""The train stage: real Horovod ranks, real checkpoints, real signals, on a small demo dataset."""
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import HANG_GUARD, REPO, TEST_ARCH, python_with_env, run_cli
from effnet.core import layout
from effnet.core.errors import EXIT_PREEMPTED, UserError
from effnet.formats import checkpoints, trained_run
from effnet.formats.dllog import read_records
from effnet.stages.train import lock, recipe

# The test-sized EfficientNet at 32 px, batch 8: 60 training images are 7 steps per epoch.
FAST = ["--set", f"model.arch={TEST_ARCH}", "--set", "model.image_size=32", "--set", "train.batch_size=8",
        "--set", "train.lr_init=0.05", "--set", "train.lr_warmup_epochs=0", "--set", "train.log_every=1",
        "--set", "eval.batch_size=16"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    run_cli("demo-data", "--output", str(root / "demo"), "--train-per-class", "6", "--val-per-class", "2",
            check=True)
    run_cli("prepare", "--source", "folders", "--input", str(root / "demo"), "--output", str(root / "rec"),
            "--train-shards", "2", "--val-shards", "1", "--workers", "2", check=True)
    return root / "rec"


def train_args(records, out, *extra):
    return [sys.executable, "-m", "effnet", "train", "--data", str(records), "--output", str(out), *FAST, *extra]


def log_records(out: Path) -> list[dict]:
    path = out / layout.TRAIN_LOG
    return read_records(path) if path.exists() else []


def step_losses(out: Path) -> list[float]:
    return [r["data"]["loss"] for r in log_records(out) if r["type"] == "LOG" and isinstance(r["step"], list)
            and len(r["step"]) == 2]


def final_state(out: Path) -> dict:
    return checkpoints.read(checkpoints.checkpoints(out / "checkpoints")[-1])[1]


RANK_SCRIPT = """
import sys, numpy as np
from effnet.core.config import load_config, parse_overrides
from effnet.stages.train.loop import train
config = load_config("config/config.yaml", parse_overrides(sys.argv[3:]))
status, trainer = train(config, sys.argv[1], sys.argv[2])
np.savez(f"{sys.argv[2]}/rank{trainer.world.rank}.npz", **{v.path: v.numpy() for v in trainer.model.variables})
"""


@pytest.mark.slow(minutes=2)
def test_two_gloo_ranks_end_with_identical_weights_and_the_loss_falls(records, tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    out = tmp_path / "run"
    sets = [a for a in FAST if a != "--set"] + ["train.epochs=4", "train.batch_size=4", "train.eval_every=4",
                                                 "model.batch_norm=sync"]
    proc = subprocess.run([str(Path(sys.executable).with_name("horovodrun")), "--gloo", "-np", "2", "-H",
                           "localhost:2", sys.executable, str(script), str(records), str(out), *sets],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=HANG_GUARD)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "rank 0/2 local_rank 0/2 device CPU precision float32" in proc.stdout
    assert "rank 1/2 local_rank 1/2 device CPU precision float32" in proc.stdout
    ranks = [np.load(out / f"rank{r}.npz") for r in range(2)]
    assert len(ranks[0].files) > 150  # every variable of the model (159 of efficientnet-test)
    for name in ranks[0].files:
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=name)
    summary = trained_run.load_summary(out)
    assert (summary["world_size"], summary["global_batch"], summary["steps"]) == (2, 8, 4 * 7)
    assert len(summary["img_per_sec_per_rank"]) == 2 and summary["eval"]["examples"] == 20
    losses = step_losses(out)
    assert len(losses) == 28
    assert np.mean(losses[-7:]) < np.mean(losses[:7])  # it learns


AMP_RANK_SCRIPT = RANK_SCRIPT + """
import horovod.tensorflow as hvd
import tensorflow as tf
from effnet.stages.train.loop import distributed_tape
print(f"LOSS_SCALE rank={trainer.world.rank} {float(trainer.optimizer.dynamic_scale.numpy())}", flush=True)
# a loss-scaled gradient of 40000 on each rank, compressed to float16 (largest 65504) and averaged
v = tf.Variable(1.0)
for name, make in (("ours", lambda t: distributed_tape(hvd, t, hvd.Compression.fp16, hvd.size())),
                   ("sum first", lambda t: hvd.DistributedGradientTape(t, compression=hvd.Compression.fp16))):
    with tf.GradientTape() as tape:
        y = v * 40000.0
    print(f"AVERAGE {name} rank={hvd.rank()} {float(make(tape).gradient(y, [v])[0].numpy())}", flush=True)
"""


@pytest.mark.slow(minutes=3)
def test_the_gpu_recipe_on_two_ranks_float16_compressed_gradients_and_xla_agree_and_checkpoint_the_scale(
        records, tmp_path):
    """The GPU recipe's numerics and compilation on CPU, on 2 gloo ranks with sync batch norm: train.amp=float16
    (LossScaleOptimizer; float16 gradient compression, divided by the rank count before Horovod sums in float16)
    and train.xla=true (XLA auto-clustering of the step, Horovod's allreduces left outside the clusters; on a CPU
    TensorFlow clusters only with --tf_xla_cpu_global_jit, set here). The ranks end with identical weights and
    the loss scale is in the checkpoint."""
    script = tmp_path / "rank.py"
    script.write_text(AMP_RANK_SCRIPT)
    out = tmp_path / "run"
    sets = [a for a in FAST if a != "--set"] + ["train.amp=float16", "train.xla=true", "train.epochs=1",
                                                 "train.steps_per_epoch=3", "train.batch_size=4",
                                                 "model.batch_norm=sync"]
    env = {**ENV, "TF_XLA_FLAGS": "--tf_xla_cpu_global_jit", "TF_CPP_MIN_LOG_LEVEL": "0"}
    proc = subprocess.run([str(Path(sys.executable).with_name("horovodrun")), "--gloo", "-np", "2", "-H",
                           "localhost:2", sys.executable, str(script), str(records), str(out), *sets],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=HANG_GUARD)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "rank 1/2 local_rank 1/2 device CPU precision mixed_float16 xla True" in proc.stdout
    assert "Compiled cluster using XLA" in output, output[-3000:]
    lines = sorted(line[line.index("AVERAGE"):] for line in proc.stdout.splitlines() if "AVERAGE" in line)
    assert lines == ["AVERAGE ours rank=0 40000.0", "AVERAGE ours rank=1 40000.0",
                     "AVERAGE sum first rank=0 inf", "AVERAGE sum first rank=1 inf"]
    ranks = [np.load(out / f"rank{r}.npz") for r in range(2)]
    for name in ranks[0].files:
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=name)
    scales = {line.split()[-1] for line in proc.stdout.splitlines() if "LOSS_SCALE" in line}
    state = final_state(out)
    (saved,) = [k for k in state if k.endswith("dynamic_scale")]
    assert len(scales) == 1 and float(state[saved]) == float(scales.pop())
    summary = trained_run.load_summary(out)
    assert summary["precision"] == "mixed_float16" and summary["steps"] == 3 and np.isfinite(
        summary["final_train_loss"])


@pytest.mark.slow(minutes=4)
def test_a_hung_rank_ends_the_job_after_the_stall_timeout(records, tmp_path):
    """Rank 1 stopped (SIGSTOP) mid-run: rank 0 waits in the next allreduce, its watchdog sees no step for
    train.stall_timeout seconds and exits 70, and horovodrun ends the job (srun does a minute later under
    SLURM). gloo waits longer (its own 30 s default would end it first, and would also fail a rank waiting
    while rank 0 writes a large checkpoint). The timeout is far above any gap between two beats under load (a
    step of this model, a checkpoint, an evaluation batch: seconds); the watching starts at the first step, as
    tracing it took over 180 s for 2 ranks in a loaded run."""
    out = tmp_path / "run"
    tag = {"EFFNET_TEST_RUN": str(out)}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("horovodrun")), "--gloo", "-np", "2", "-H",
                             "localhost:2", *train_args(records, out, "--set", "train.epochs=100",
                                                        "--set", "train.stall_timeout=30")],
                            cwd=REPO, env={**ENV, **tag}, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    rank1 = None
    try:
        deadline = time.time() + HANG_GUARD
        while len(step_losses(out)) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert len(step_losses(out)) >= 2, proc.communicate()[0][-3000:]
        rank1 = python_with_env(HOROVOD_RANK="1", **tag)
        os.kill(rank1, signal.SIGSTOP)
        stopped = time.monotonic()
        output, _ = proc.communicate(timeout=HANG_GUARD)
        took = time.monotonic() - stopped
    finally:
        proc.kill()
        if rank1:
            try:
                os.kill(rank1, signal.SIGKILL)
            except ProcessLookupError:
                pass
    print(f"stopped rank 1 -> job ended: {took:.0f} s")
    assert proc.returncode != 0
    assert "rank 0: no training progress for" in output and "exiting with status 70" in output, output[-3000:]
    assert took >= 30


# Two stages of an epoch each (7 steps), everything scheduled: 32 then 40 px, RandAugment at 4 then 10, mixup
# 0 then 0.4, CutMix 0.1 then 0.5; evaluated after every epoch.
STAGEWISE = ["--set", "train.stages=2", "--set", "model.image_size=40", "--set", "train.base_image_size=32",
             "--set", "train.augment=randaugment", "--set", "train.base_randaug_magnitude=4", "--set",
             "train.mixup_alpha=0.4", "--set", "train.base_mixup_alpha=0", "--set", "train.cutmix_alpha=0.5",
             "--set", "train.base_cutmix_alpha=0.1", "--set", "train.eval_every=1"]


@pytest.mark.slow(minutes=3)
@pytest.mark.parametrize("stages, stop_after", [([], 3), (STAGEWISE, 9)], ids=["one stage", "stage-wise"])
def test_sigterm_then_resume_ends_with_the_weights_of_an_uninterrupted_run(records, tmp_path, stages, stop_after):
    """Stage-wise: stopped inside the second stage, the rerun resumes in it at the exact step, at its size and
    regularisation (else the weights would differ from the uninterrupted run's)."""
    settings = ["--set", "train.epochs=2", "--set", "train.deterministic=true", "--set", "train.ema_decay=0.9",
                "--set", "model.dropout=0.3", *stages]
    whole = subprocess.run(train_args(records, tmp_path / "whole", *settings), cwd=REPO, env=ENV,
                           capture_output=True, text=True, timeout=HANG_GUARD)
    assert whole.returncode == 0, whole.stderr[-3000:]

    out = tmp_path / "stopped"
    proc = subprocess.Popen(train_args(records, out, *settings), cwd=REPO, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + HANG_GUARD
    while len(step_losses(out)) < stop_after and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == EXIT_PREEMPTED, stderr[-3000:]
    stopped_at = [r for r in log_records(out) if r.get("step") == "PARAMETER" and "checkpoint_step" in r["data"]]
    step = stopped_at[0]["data"]["checkpoint_step"]
    assert stop_after <= step < 14  # inside the run, at a step boundary
    assert not (out / "train_summary.json").exists()

    resumed = subprocess.run(train_args(records, out, *settings), cwd=REPO, env=ENV, capture_output=True,
                             text=True, timeout=HANG_GUARD)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    resume = [r["data"] for r in log_records(out) if r.get("step") == "PARAMETER" and "resumed_from_step" in r["data"]]
    assert resume == [{"resumed_from_step": step, "epoch": step // 7, "micro_batch": step % 7}]
    assert trained_run.load_summary(out)["steps"] == 14
    if stages:
        starts = [r["data"] for r in log_records(out) if r.get("step") == "PARAMETER" and "stage_start" in r["data"]]
        assert [s["stage_start"]["index"] for s in starts] == [0, 1, 1]  # the rerun starts in stage 1, mid-way
        assert starts[-1]["stage_start"] == {"index": 1, "first_epoch": 1, "end_epoch": 2, "image_size": 40,
                                             "mixup_alpha": 0.4, "cutmix_alpha": 0.5, "randaug_magnitude": 10}
        assert (starts[-1]["epoch"], starts[-1]["micro_batch"]) == (1, step - 7)
        logged = {tuple(r["step"]): r["data"]["stage"] for r in log_records(out) if r["type"] == "LOG"
                  and isinstance(r["step"], list) and len(r["step"]) == 2}
        assert logged == {(int(s > 7), s): int(s > 7) for s in range(1, 15)}  # (epoch, step): stage
        assert [s["image_size"] for s in trained_run.load_summary(out)["stages"]] == [32, 40]
        evaluated = {r["step"][0]: r["data"]["stage"] for r in log_records(out) if r["type"] == "LOG"
                     and isinstance(r["step"], list) and len(r["step"]) == 1}
        assert evaluated == {1: 0, 2: 1}  # epoch 1 evaluated by stage 0, epoch 2 by stage 1
    a, b = final_state(tmp_path / "whole"), final_state(out)
    assert sorted(a) == sorted(b) and any(k.startswith("ema/") for k in a)
    for name in a:  # model, RNG states, optimizer slots, EMA: every tensor
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.slow(minutes=3)
def test_sigkill_at_a_random_step_resumes_from_the_last_checkpoint_of_this_model(records, tmp_path):
    out = tmp_path / "run"
    settings = ["--set", "train.epochs=2", "--set", "train.checkpoint_every_steps=2"]
    proc = subprocess.Popen(train_args(records, out, *settings), cwd=REPO, env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = int(np.random.default_rng().integers(3, 11))
    deadline = time.time() + HANG_GUARD
    while len(step_losses(out)) < target and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = [int(p.name[5:]) for p in checkpoints.checkpoints(out / "checkpoints")]
    assert saved and all(s % 2 == 0 for s in saved) and len(saved) <= 3  # keep_checkpoints
    resumed = subprocess.run(train_args(records, out, *settings), cwd=REPO, env=ENV, capture_output=True,
                             text=True, timeout=HANG_GUARD)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    resume = [r["data"] for r in log_records(out) if r.get("step") == "PARAMETER" and "resumed_from_step" in r["data"]]
    assert resume[0]["resumed_from_step"] == max(saved)
    assert trained_run.load_summary(out)["steps"] == 14
    assert (out / "model.keras").exists() and (out / "ema.keras").exists()
    assert not list((out / "checkpoints").glob(".*"))  # no temporary checkpoint left
    other = subprocess.run(train_args(records, out, "--set", "model.arch=efficientnet-b1"), cwd=REPO, env=ENV,
                           capture_output=True, text=True, timeout=HANG_GUARD)
    assert other.returncode == 2
    assert ("a checkpoint of another model (arch 'efficientnet-test' in the checkpoint, 'efficientnet-b1' in this run)"
            in other.stderr)
    # other records (the same images shuffled into other shards) under the same keys: the finished run's
    # checkpoints are set aside and it trains afresh, not the last checkpoint published again (a changed
    # training key does the same: test_checkpoints_of_another_recipe_are_set_aside_not_resumed)
    other = records.parent / "rec-seed-1"
    run_cli("prepare", "--source", "folders", "--input", str(records.parent / "demo"), "--output", str(other),
            "--train-shards", "2", "--val-shards", "1", "--workers", "2", "--seed", "1", check=True)
    retrained = subprocess.run(train_args(other, out, *settings), cwd=REPO, env=ENV, capture_output=True,
                               text=True, timeout=HANG_GUARD)
    assert retrained.returncode == 0, retrained.stderr[-3000:]
    assert "under another training recipe" in retrained.stderr
    summary = trained_run.load_summary(out)
    assert summary["steps"] == 14 and summary["resumed_from_step"] is None
    (aside,) = (out / "checkpoints").glob(f"{layout.SUPERSEDED_PREFIX}*")
    assert max(int(p.name[5:]) for p in checkpoints.checkpoints(aside)) == 14


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    identity = {"arch": "efficientnet-b0", "num_classes": 10, "image_size": 32}
    for step in (2, 4):
        checkpoints.save(tmp_path, {"w": np.full(3, step, np.float32)}, {"step": step, **identity}, keep=3)
    newest = tmp_path / "ckpt-000000004" / "state.npz"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=r"ckpt-000000004/state.npz: checksum mismatch \(damaged\); resuming from "
                                         "the previous checkpoint"):
        meta, arrays = checkpoints.latest(tmp_path, identity)
    assert meta["step"] == 2 and arrays["w"].tolist() == [2, 2, 2]
    with pytest.raises(UserError, match="arch 'efficientnet-b0' in the checkpoint, 'efficientnet-b1' in this run"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            checkpoints.latest(tmp_path, {**identity, "arch": "efficientnet-b1"})



def test_checkpoints_of_another_recipe_are_set_aside_not_resumed(tmp_path):
    identity = {"arch": "efficientnet-b0", "num_classes": 10, "image_size": 32}
    for step in (2, 4):
        checkpoints.save(tmp_path, {"w": np.zeros(3)}, {"step": step, **identity, checkpoints.RECIPE: "a" * 64},
                         keep=3)
    assert checkpoints.latest(tmp_path, identity, "a" * 64)[0]["step"] == 4
    with pytest.warns(UserWarning, match="under another training recipe"):
        assert checkpoints.latest(tmp_path, identity, "b" * 64) is None
    assert checkpoints.checkpoints(tmp_path) == []
    assert [p.name for p in checkpoints.checkpoints(tmp_path / "superseded-aaaaaaaaaaaa")] == ["ckpt-000000002",
                                                                                            "ckpt-000000004"]
    config = {"model": {"arch": "efficientnet-b0"}, "train": {"epochs": 3, "log_every": 5}}
    assert recipe.fingerprint(config) == recipe.fingerprint({**config, "train": {"epochs": 3, "log_every": 9}})
    assert recipe.fingerprint(config) != recipe.fingerprint({**config, "train": {"epochs": 4, "log_every": 5}})
    manifest = {"label_offset": 1, "classes": [{"id": "a"}], "splits": {"train": {"shards": [{"sha256": "0"}]}},
                "source": {"input": "/data/a"}}
    moved = {**manifest, "source": {"input": "/data/b"}}  # the same records elsewhere
    reshuffled = {**manifest, "splits": {"train": {"shards": [{"sha256": "1"}]}}}
    assert recipe.fingerprint(config, manifest) == recipe.fingerprint(config, moved)
    assert recipe.fingerprint(config, manifest) != recipe.fingerprint(config, reshuffled)


STAGE_BATCHES = """
import sys
from pathlib import Path
from effnet.core import ranks
from effnet.core.config import load_config, parse_overrides
from effnet.stages.train import recipe
from effnet.stages.train.loop import Trainer
config = load_config("config/config.yaml", parse_overrides(sys.argv[4:]))
out = Path(sys.argv[2])
trainer = Trainer(config, sys.argv[1], out, out, ranks.init(), recipe.precision(config["train"], on_gpu=False),
                  index_dir=sys.argv[3])
for stage in trainer.stages:
    images, _ = next(iter(trainer.batches(stage, stage.first_epoch, 1, 0)))
    print("stage", stage.index, tuple(images.shape))
"""


@pytest.mark.parametrize("backend", ["tfdata", "dali"])
def test_each_stage_streams_batches_at_its_own_size_on_either_backend(records, tmp_path, backend):
    index = tmp_path / "index"
    run_cli("index", "--tfrecords", str(records), "--output", str(index), check=True)
    settings = [s for s in FAST if s != "--set"] + [f"data.backend={backend}", "train.epochs=2", *STAGEWISE[1::2]]
    proc = subprocess.run([sys.executable, "-c", STAGE_BATCHES, str(records), str(tmp_path), str(index), *settings],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=HANG_GUARD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [line for line in proc.stdout.splitlines() if line.startswith("stage")] == [
        "stage 0 (8, 32, 32, 3)", "stage 1 (8, 40, 40, 3)"]


def test_gradient_accumulation_applies_one_update_per_n_batches(records, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(train_args(records, out, "--set", "train.epochs=1", "--set", "train.grad_accum_steps=2"),
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=HANG_GUARD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = trained_run.load_summary(out)
    assert (summary["steps"], summary["global_batch"]) == (3, 16)  # 7 batches of 8: 3 updates of 2 batches
    assert [r["step"] for r in log_records(out) if r["type"] == "LOG" and len(r.get("step", [])) == 2] == [
        [0, 1], [0, 2], [0, 3]]


@pytest.mark.parametrize("setting, message", [
    ("train.bogus=1", "train: Additional properties are not allowed ('bogus' was unexpected)"),
    ("train.epochs=many", "train.epochs: 'many' is not of type 'integer'"),
    ("train.batch_size=1000", "60 training examples over 1 ranks do not fill one batch of 1000 per rank"),
    ("train", "--set 'train': expected KEY=VALUE"),
])
def test_a_config_that_cannot_work_stops_before_training(records, tmp_path, setting, message):
    proc = subprocess.run(train_args(records, tmp_path / "run", "--set", setting), cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=HANG_GUARD)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


HOLD_LOCK = """
import sys, time
from pathlib import Path
from effnet.stages.train.lock import hold
held = hold(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(3600)
"""


def test_a_second_trainer_on_a_run_directory_stops_at_once_naming_the_first(records, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    first = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], cwd=REPO, env=ENV, text=True,
                             stdout=subprocess.PIPE)
    try:
        assert first.stdout.readline() == "held\n"
        second = subprocess.run(train_args(records, out), cwd=REPO, env=ENV, capture_output=True, text=True,
                                timeout=HANG_GUARD)
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"{out}: another trainer is training here (host {socket.gethostname()} pid {first.pid} since" in (
        second.stderr)
    assert not (out / "checkpoints").exists() and not (out / "train.dllog.json").exists()  # nothing touched
    lock.hold(out).close()  # the holder's death released it


def test_a_rank_that_would_train_alone_is_an_error(records, tmp_path):
    env = {**ENV, "SLURM_NTASKS": "2", "SLURM_PROCID": "0"}
    proc = subprocess.run(train_args(records, tmp_path / "run"), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=HANG_GUARD)
    assert proc.returncode == 2
    assert "SLURM_NTASKS=2 but Horovod started 1 rank(s): this process would train alone" in proc.stderr


def test_amp_means_float16_on_gpu_float32_on_a_cpu_or_what_it_names():
    from effnet.stages.benchmark.precisions import resolve

    native = recipe.cpu_has_native_bf16()
    assert recipe.amp_policy(True, on_gpu=True) == "mixed_float16"
    assert recipe.amp_policy(True, on_gpu=False) is None
    with pytest.warns(UserWarning, match="train.amp: float32 on a CPU"):
        assert recipe.precision({"amp": True, "xla": "auto", "tf32": True}, on_gpu=False).policy == "float32"
    assert recipe.amp_policy("bfloat16", on_gpu=False) == "mixed_bfloat16"
    assert recipe.amp_policy("float16", on_gpu=False) == "mixed_float16"
    assert recipe.amp_policy(False, on_gpu=True) is None
    # the benchmark's amp row follows train.amp where it names a type, else runs where AMP pays (here: CPU)
    auto = resolve("amp", {"amp": False, "xla": "auto"})
    assert auto == recipe.Precision("mixed_bfloat16", False, False) if native else "no native bfloat16" in auto
    assert resolve("amp", {"amp": "float16", "xla": "auto"}) == recipe.Precision("mixed_float16", False, False)
    assert resolve("tf32", {"amp": True, "xla": "auto"}) == "TF32 needs a GPU (Ampere or newer)"


def test_learning_rate_warms_up_then_follows_the_cosine_to_zero_and_drops_when_the_backbone_unfreezes():
    train = {"lr_init": 0.005, "lr_warmup_epochs": 2, "epochs": 10, "lr_decay": "cosine", "lr_decay_rate": 0.97,
             "lr_decay_epochs": 2.4, "freeze_epochs": 0, "unfrozen_lr_scale": 0.1}
    lr = recipe.schedule(train, global_batch=1024, steps_per_epoch=100)
    peak = 0.005 * 1024 / 128
    np.testing.assert_allclose([float(lr(s)) for s in (0, 100, 200, 600, 1000)],
                               [0, peak / 2, peak, peak / 2, 0], atol=1e-6)
    exponential = recipe.schedule({**train, "lr_decay": "exponential"}, global_batch=128, steps_per_epoch=100)
    np.testing.assert_allclose(float(exponential(200 + 240)), 0.005 * 0.97, rtol=1e-5)
    tuned = recipe.schedule({**train, "freeze_epochs": 6}, global_batch=1024, steps_per_epoch=100)
    np.testing.assert_allclose([float(tuned(s)) for s in (200, 599, 600, 800)],
                               [float(lr(s)) * f for s, f in ((200, 1), (599, 1), (600, 0.1), (800, 0.1))], rtol=1e-6)


def test_ema_follows_the_reference_decay():
    import keras
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
    ema = recipe.EMA(model, 0.9999)
    kernel = model.weights[0]
    start = kernel.numpy().copy()
    kernel.assign(start + 1.0)
    ema.update(1)  # decay min(0.9999, 2 / 11)
    np.testing.assert_allclose(ema.averages[0].numpy(), start + (1 - 2 / 11), rtol=1e-6)
    ema.swap()
    np.testing.assert_allclose(kernel.numpy(), start + (1 - 2 / 11), rtol=1e-6)


@pytest.mark.slow(minutes=3)
def test_a_run_starts_from_another_runs_weights_or_checkpoint_frozen_then_not_and_names_a_misfit(records, tmp_path):
    """train.init_from a checkpoint (its EMA weights): with a learning rate of ~0 the new run ends with exactly
    those trainable weights. From a run directory (its EMA model), frozen for an epoch: the backbone, batch-norm
    statistics included, stays bit-identical to the source's, then moves (at the unfrozen rate). The source's
    digest is in the summary; weights of another arch name the layer."""
    import keras

    from effnet.core.digests import file_sha256

    first = tmp_path / "first"
    subprocess.run(train_args(records, first, "--set", "train.epochs=1"), check=True, env=ENV, timeout=HANG_GUARD)
    ckpt = checkpoints.checkpoints(first / "checkpoints")[-1]
    _, ckpt_arrays = checkpoints.read(ckpt)
    out = tmp_path / "from-checkpoint"
    subprocess.run(train_args(records, out, "--set", "train.epochs=1", "--set", "train.lr_init=1e-12",
                              "--set", f"train.init_from={ckpt}"), check=True, env=ENV, timeout=HANG_GUARD)
    start = next(r["data"] for r in log_records(out) if "init_kind" in r["data"])
    assert (start["init_kind"], start["init_layers_reinitialised"]) == ("checkpoint", [])
    assert trained_run.load_summary(out)["init_sha256"] == file_sha256(ckpt / layout.CHECKPOINT_STATE)
    final = keras.models.load_model(out / "model.keras", compile=False)
    for v in final.trainable_variables:
        np.testing.assert_allclose(v.numpy(), ckpt_arrays[f"ema/{v.path}"], atol=1e-6, err_msg=v.path)
    # fine-tuning: the first epoch trains the classifier alone (batch norm in inference mode), then everything
    frozen = tmp_path / "frozen"
    subprocess.run(train_args(records, frozen, "--set", "train.epochs=2", "--set", "train.freeze_epochs=1",
                              "--set", "train.checkpoint_every=1", "--set", f"train.init_from={first}"),
                   check=True, env=ENV, timeout=HANG_GUARD)
    start = next(r["data"] for r in log_records(frozen) if "init_kind" in r["data"])
    assert (start["init_kind"], start["init_layers_reinitialised"]) == ("run", [])
    assert trained_run.load_summary(frozen)["init_sha256"] == file_sha256(first / "ema.keras")
    ema = keras.models.load_model(first / "ema.keras", compile=False)
    start = {v.path: v.numpy() for v in ema.variables if v.dtype == "float32"}
    after_one, after_two = (checkpoints.read(c)[1] for c in checkpoints.checkpoints(frozen / "checkpoints")[-2:])
    backbone = [path for path in start if not path.startswith("logits")]
    assert all(np.array_equal(after_one[f"model/{p}"], start[p]) for p in backbone)  # BN statistics included
    assert not np.array_equal(after_one["model/logits/kernel"], start["logits/kernel"])
    moved = [p for p in backbone if not np.array_equal(after_two[f"model/{p}"], start[p])]
    assert len(moved) > len(backbone) / 2, moved
    other = subprocess.run(train_args(records, tmp_path / "b0", "--set", "model.arch=efficientnet-b0",
                                      "--set", f"train.init_from={first}"),
                           capture_output=True, text=True, env=ENV, timeout=HANG_GUARD)
    assert other.returncode != 0
    assert f"{first}: layer stem_conv does not fit" in other.stderr, other.stderr[-2000:]


@pytest.mark.slow(minutes=2)
def test_the_finetune_preset_trains_an_efficientnetv2_from_keras_applications_weights(records, tmp_path):
    """config/finetune.yaml with model.arch efficientnetv2-b0 and keras.applications' V2-B0 notop weights (random
    ones, saved as Keras 3 saves them): the classifier starts afresh, the backbone as the file's and stays so
    through the frozen first epoch, then trains."""
    import keras

    file = tmp_path / "efficientnetv2-b0_notop.weights.h5"
    keras.applications.EfficientNetV2B0(weights=None, include_top=False, input_shape=(32, 32, 3)).save_weights(file)
    theirs = keras.applications.EfficientNetV2B0(weights=None, include_top=False, input_shape=(32, 32, 3))
    theirs.load_weights(file)
    out = tmp_path / "v2"
    subprocess.run([sys.executable, "-m", "effnet", "train", "--config", "config/finetune.yaml", "--data", str(records),
                    "--output", str(out), "--set", "model.arch=efficientnetv2-b0", "--set", "model.image_size=32",
                    "--set", "data.backend=tfdata", "--set", "train.batch_size=8", "--set", "train.epochs=2",
                    "--set", "train.checkpoint_every=1", "--set", f"train.init_from={file}",
                    "--set", "eval.batch_size=16"], check=True, env=ENV, cwd=REPO, timeout=HANG_GUARD)
    start = next(r["data"] for r in log_records(out) if "init_kind" in r["data"])
    assert (start["init_kind"], start["init_layers_reinitialised"]) == ("keras.applications", ["logits"])
    frozen, unfrozen = (checkpoints.read(c)[1] for c in checkpoints.checkpoints(out / "checkpoints")[-2:])
    for ours, keras_name in (("stem_conv", "stem_conv"), ("block06_dwconv", "block4a_dwconv2"),
                             ("block16_se_reduce", "block6c_se_reduce"), ("head_bn", "top_bn")):
        expected = theirs.get_layer(keras_name).weights[0].numpy()
        assert np.array_equal(frozen[f"model/{ours}/{theirs.get_layer(keras_name).weights[0].name}"], expected), ours
    assert not np.array_equal(unfrozen["model/stem_conv/kernel"], frozen["model/stem_conv/kernel"])
    assert trained_run.load_summary(out)["steps"] > 0


def test_the_starting_weights_count_in_the_fingerprint_by_content_not_path():
    from effnet.core.config import load_config

    base = load_config(REPO / "config/config.yaml")
    moved = load_config(REPO / "config/config.yaml", {"train": {"init_from": "/elsewhere/b0.h5"}})
    assert recipe.fingerprint(base) == recipe.fingerprint(moved)  # random start: as before the key existed
    assert recipe.fingerprint(moved, None, "a" * 64) != recipe.fingerprint(moved, None, "b" * 64)


def test_a_run_from_before_the_stage_keys_keeps_its_fingerprint_and_its_checkpoints():
    from effnet.core.config import load_config

    config = load_config(REPO / "config/config.yaml")
    before = {**config, "train": {k: v for k, v in config["train"].items() if k not in recipe.LATER_KEYS}}
    assert recipe.fingerprint(config) == recipe.fingerprint(before)
    staged = load_config(REPO / "config/config.yaml", {"train": {"stages": 2, "base_image_size": 32}})
    stronger = load_config(REPO / "config/config.yaml", {"train": {"randaug_magnitude": 15}})
    assert len({recipe.fingerprint(c) for c in (config, staged, stronger)}) == 3
