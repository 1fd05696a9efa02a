"""A full disk at every stage that writes: one line naming the stage, the path and the space left, exit status
EXIT_NO_SPACE, nothing half-written under a final name, and the same command after space is freed completes.

The file system is a size-limited tmpfs the test mounts (root: as CI runs), filled to leave what the test wants."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HANG_GUARD, REPO, TEST_ARCH, run_cli
from effnet.core import layout
from effnet.core.errors import EXIT_NO_SPACE

SIZE_MIB = 64
TRAIN = ["--set", f"model.arch={TEST_ARCH}", "--set", "model.image_size=32", "--set", "train.batch_size=8",
         "--set", "train.lr_warmup_epochs=0", "--set", "train.checkpoint_every=1", "--set", "eval.batch_size=16"]


class SmallDisk:
    """A tmpfs of SIZE_MIB at ``root``, filled by a filler file to leave a chosen number of bytes."""

    def __init__(self, root: Path) -> None:
        self.root, self.filler = root, root / ".filler"

    def leave(self, free: int) -> None:
        """Fill the file system until about ``free`` bytes are left."""
        self.filler.unlink(missing_ok=True)
        fill = shutil.disk_usage(self.root).free - int(free)
        with open(self.filler, "wb") as f:
            for start in range(0, max(fill, 0), 1 << 20):
                f.write(b"\0" * min(1 << 20, fill - start))

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("a full file system is simulated on a size-limited tmpfs, which only root can mount here: run "
                    "the tests as root (as ./.ci/run does)")
    root = tmp_path / "small"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MIB}m", "tmpfs", str(root)], check=True)
    yield SmallDisk(root)
    subprocess.run(["umount", "--lazy", str(root)], check=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Demo records, their index, a one-epoch run with a checkpoint, and its export."""
    root = tmp_path_factory.mktemp("full")
    run_cli("demo-data", "--output", str(root / "demo"), "--train-per-class", "6", "--val-per-class", "2",
            check=True)
    run_cli("prepare", "--source", "folders", "--input", str(root / "demo"), "--output", str(root / "rec"),
            "--train-shards", "4", "--val-shards", "1", "--workers", "1", check=True)
    run_cli("index", "--tfrecords", str(root / "rec"), "--output", str(root / "index"), check=True)
    run_cli("train", "--data", str(root / "rec"), "--output", str(root / "run"), *TRAIN, "--set", "train.epochs=1",
            check=True)
    run_cli("export", "--model", str(root / "run"), "--output", str(root / "export"), check=True)
    return root


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def assert_full(proc, stage: str, disk: SmallDisk, written: Path) -> None:
    """The stage's one line about ``written`` (under the small disk), its exit status, no temporary left."""
    assert proc.returncode == EXIT_NO_SPACE, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    pattern = (rf"error: {stage}: {re.escape(str(written))}\S*: no space left on its file system \(\d+(\.\d)? \w+ free "
               rf"of {SIZE_MIB}\.0 MiB on {re.escape(str(disk.root))}(; this write needed about \S+ \w+)?\); free "
               r"space or raise the quota, then run the same command again: what is complete is kept")
    assert re.fullmatch(pattern, errors[0]), errors[0]
    assert not [p for p in disk.root.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]


def test_prepare_keeps_its_complete_shards_and_writes_only_the_rest_once_space_is_freed(run, small_disk):
    shard = max(size_of(p) for p in (run / "rec").glob("train-*"))
    out = small_disk.root / "rec"
    command = ["prepare", "--source", "folders", "--input", str(run / "demo"), "--output", str(out),
               "--train-shards", "4", "--val-shards", "1", "--workers", "1"]
    small_disk.leave(2.5 * shard)  # a shard or two, not five
    proc = run_cli(*command)
    assert_full(proc, "prepare", small_disk, out)
    kept = sorted(p.name for p in out.glob("*-of-*"))
    assert kept and len(kept) < 5 and not (out / layout.RECORDS_MANIFEST).exists()
    small_disk.free()
    again = run_cli(*command)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{len(kept)} of 5 shards already complete, {5 - len(kept)} to write" in again.stdout


def test_index_stops_at_the_full_disk_and_completes_after(run, small_disk):
    out = small_disk.root / "index"
    small_disk.leave(0)
    assert_full(run_cli("index", "--tfrecords", str(run / "rec"), "--output", str(out)), "index", small_disk, out)
    assert not (out / layout.INDEX_SUMMARY).exists()
    small_disk.free()
    assert run_cli("index", "--tfrecords", str(run / "rec"), "--output", str(out)).returncode == 0


def test_train_keeps_its_last_checkpoint_and_resumes_from_it_once_space_is_freed(run, small_disk):
    checkpoint = size_of(next((run / "run" / layout.CHECKPOINTS).glob("ckpt-*")))
    out = small_disk.root / "run"
    command = ["train", "--data", str(run / "rec"), "--output", str(out), *TRAIN, "--set", "train.epochs=3"]
    small_disk.leave(1.6 * checkpoint + (1 << 20))  # the first checkpoint and the logs fit, the second does not
    proc = run_cli(*command)
    assert_full(proc, "train", small_disk, out / layout.CHECKPOINTS / "ckpt-")
    saved = sorted(p.name for p in (out / layout.CHECKPOINTS).glob("ckpt-*"))
    assert saved == ["ckpt-000000007"] and not (out / layout.TRAIN_SUMMARY).exists()
    small_disk.free()
    again = run_cli(*command)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed_from_step: 7" in again.stdout


def test_two_ranks_both_stop_at_rank_0s_full_disk_and_the_launcher_reports_it(run, small_disk):
    """Rank 0 writes the checkpoints, and its failure is handed to the other rank; the local launch through
    horovodrun (which ends the other ranks once one has failed, and itself exits 1) reports rank 0's 74, nothing
    half-written is left, and the rerun resumes from the kept checkpoint."""
    checkpoint = size_of(next((run / "run" / layout.CHECKPOINTS).glob("ckpt-*")))
    out = small_disk.root / "run"
    command = [sys.executable, str(REPO / "workflow/scripts/launch.py"), "--rule", "train", "--tasks-per-node", "2",
               "--gpus-per-task", "1", "--", sys.executable, "-m", "effnet", "train", "--data", str(run / "rec"),
               "--output", str(out), *TRAIN, "--set", "train.epochs=3"]
    small_disk.leave(1.6 * checkpoint + (1 << 20))
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=HANG_GUARD)
    assert proc.returncode == EXIT_NO_SPACE, (proc.stdout + proc.stderr)[-3000:]
    # horovodrun ends the other ranks once one has failed (137 for rank 1 if it is still leaving): its status is 1
    assert f"[0]<stderr>:error: train: {out / layout.CHECKPOINTS}/ckpt-" in proc.stdout + proc.stderr
    assert "<stderr>:Traceback" not in proc.stdout + proc.stderr  # none from the ranks (horovodrun prints its own)
    saved = sorted((out / layout.CHECKPOINTS).glob("ckpt-*"))
    assert len(saved) == 1 and not (out / layout.TRAIN_SUMMARY).exists()
    assert not [p for p in small_disk.root.rglob("*") if ".tmp-" in p.name]
    small_disk.free()
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=HANG_GUARD)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert f"resumed_from_step: {int(saved[0].name.split('-')[1])}" in again.stdout


@pytest.mark.parametrize("stage", ["evaluate", "export", "infer", "benchmark", "report", "compare runs"])
def test_a_stage_that_writes_one_output_stops_at_the_full_disk_and_completes_after(run, small_disk, stage):
    out = small_disk.root / stage
    command = {
        "evaluate": ["evaluate", "--model", str(run / "run"), "--data", str(run / "rec"), "--output",
                     str(out / "metrics.json")],
        "export": ["export", "--model", str(run / "run"), "--output", str(out)],
        "infer": ["infer", "--model", str(run / "export"), "--images", str(run / "demo" / "val"), "--output",
                  str(out / "predictions.csv")],
        "benchmark": ["benchmark", "inference", "--model", str(run / "run"), "--export", str(run / "export"),
                      "--output", str(out), "--set", "benchmark.inference_max_batch=1", "--set",
                      "benchmark.inference_steps=2", "--set", "benchmark.inference_warmup=1", "--set",
                      "benchmark.precisions=[fp32]", "--set", f"model.arch={TEST_ARCH}"],
        "report": ["report", "--run", str(run), "--output", str(out)],
        "compare runs": ["report", "--runs", str(run), str(run), "--output", str(out)],  # a batch's report
    }[stage]
    small_disk.leave(0)
    assert_full(run_cli(*command), command[0], small_disk, out)
    small_disk.free()
    again = run_cli(*command)
    assert again.returncode == 0, again.stderr[-3000:]
