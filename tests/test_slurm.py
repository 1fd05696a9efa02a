"""The SLURM profile: resources and launch lines from the config (unit), and the demo DAG through a real
one-node SLURM cluster on localhost (sbatch, srun, 2 fake GPUs, a stand-in Pyxis plugin), including a
train job that reaches its time limit, checkpoints on SIGUSR1, is resubmitted and resumes."""
from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import HANG_GUARD, REPO, SIDE_BY_SIDE, TEST_ARCH, memory_limited, python_with_env

sys.path.insert(0, str(REPO / "tests"))
from slurm.cluster import BATCH_STEP, SLURMS, Cluster, unavailable  # noqa: E402

from effnet.cluster import job, requests  # noqa: E402
from effnet.core.config import validate  # noqa: E402
from effnet.core.errors import EXIT_NO_SPACE  # noqa: E402
from effnet.formats import benchmark_results, checkpoints, trained_run  # noqa: E402
from effnet.formats.dllog import read_records  # noqa: E402
from effnet.stages.demo_data import write_demo  # noqa: E402

SNAKEMAKE = [sys.executable, "-m", "snakemake", SIDE_BY_SIDE]
IMAGE = "registry.example.com/team/effnet:test"
PYXIS_IMAGE = "registry.example.com#team/effnet:test"


def demo_config(**cluster) -> dict:
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["cluster"].update(cluster)
    return validate(config)


def readme_commands() -> list[str]:
    """The commands of the README's "Running on SLURM" code block (comments dropped)."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Running on SLURM\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


# -- unit: config -> resources and launch lines ------------------------------------------------------
def test_pyxis_image_names():
    assert requests.pyxis_image("nvcr.io/nvidia/tensorflow:25.02-tf2-py3") == "nvcr.io#nvidia/tensorflow:25.02-tf2-py3"
    assert requests.pyxis_image("localhost:5000/x:1") == "localhost:5000#x:1"
    assert requests.pyxis_image("ubuntu:22.04") == "ubuntu:22.04"  # Docker Hub: no registry part
    assert requests.pyxis_image("nvidia/cuda:12.4") == "nvidia/cuda:12.4"
    assert requests.pyxis_image("/images/tf.sqsh") == "/images/tf.sqsh"
    assert requests.pyxis_image("nvcr.io#nvidia/tensorflow:25.02") == "nvcr.io#nvidia/tensorflow:25.02"


def test_resources_per_rule_from_the_cluster_section():
    config = demo_config(partition="cpu", gpu_partition="gpu", account="proj", qos="high", nodes=2,
                         gpus_per_node=4, mpi="pmix", signal_seconds=120, runtime_growth=2.0, max_runtime=100)
    config["cluster"]["jobs"]["train"].update(runtime=30, cpus=6, mem_mb=9000)
    train = requests.rule_resources(config, "train")
    assert {k: v for k, v in train.items() if k != "runtime"} == {
        "mem_mb": 9000, "cpus_per_task": 6, "slurm_partition": "gpu", "slurm_account": "proj", "qos": "high",
        "nodes": 2, "mpi": "srun", "tasks": 8, "gres": "gpu:4", "tasks_per_gpu": 0,
        "slurm_extra": "--no-requeue --signal=USR1@120"}
    assert [train["runtime"](None, a) for a in (1, 2, 3, 4)] == [30, 60, 100, 100]  # grows, capped
    prepare = requests.rule_resources(config, "prepare")
    assert prepare["slurm_partition"] == "cpu" and prepare["cpus_per_task"] == 2 and "gpu" not in prepare
    assert prepare["slurm_extra"] == "--no-requeue"  # Snakemake alone resubmits
    for rule in ("evaluate", "export", "infer"):  # one GPU; no --ntasks-per-gpu (refused by SLURM >= 23.11)
        resources = requests.rule_resources(config, rule)
        assert (resources["gpu"], resources["tasks_per_gpu"]) == (1, 0)
    config["cluster"]["jobs"]["index"]["partition"] = "short"
    assert requests.rule_resources(config, "index")["slurm_partition"] == "short"
    single = demo_config(gpus_per_node=1)
    resources = requests.rule_resources(single, "train")
    assert "mpi" not in resources and (resources["gpu"], resources["tasks_per_gpu"]) == (1, 0)  # the plugin's step
    assert "gpu" not in requests.rule_resources(demo_config(gpus_per_node=0), "evaluate")
    assert requests.attempts(config) == config["cluster"]["max_attempts"] - 1
    assert requests.attempts(config, main_process=False) == 0  # no retry inside the job


def test_launch_lines_and_container_options(tmp_path):
    plain = demo_config(gpus_per_node=2)
    assert requests.container_options(plain) == []
    prefix = shlex.split(requests.launch_prefix(plain, "train"))
    assert not any(a.startswith("--container") for a in prefix)
    config = demo_config(gpus_per_node=2, mpi="none", container_image=IMAGE, container_mounts="/data:/data:ro")
    config["run_dir"] = str(tmp_path / "run")
    config["data"]["input"] = "/data/imagenet"  # under a configured mount: not mounted twice
    options = requests.container_options(config, workdir=str(REPO))
    assert options == [f"--container-image={PYXIS_IMAGE}",
                       f"--container-mounts=/data:/data:ro,{REPO}:{REPO},{tmp_path}/run:{tmp_path}/run",
                       f"--container-workdir={REPO}", "--no-container-mount-home"]
    # a mount that shows a host directory elsewhere covers nothing: what is under /data inside is not the
    # host's /data, so the data input is mounted at its own path too
    moved = copy.deepcopy(config)
    moved["cluster"]["container_mounts"] = "/lustre/imagenet:/data"
    assert requests.container_options(moved, workdir=str(REPO))[1] == (
        f"--container-mounts=/lustre/imagenet:/data,{REPO}:{REPO},{tmp_path}/run:{tmp_path}/run,"
        "/data/imagenet:/data/imagenet")
    # the starting weights' directory (a checkpoint's: its run's) too
    for init_from, home in (("/w/efficientnetb0.h5", "/w"), ("/runs/a/train/checkpoints/ckpt-3", "/runs/a/train"),
                            (str(tmp_path / "run/first"), None)):
        config["train"]["init_from"] = init_from
        mounts = requests.container_options(config, workdir=str(REPO))[1].split(",")
        assert mounts[-1] == (f"{home}:{home}" if home else f"{tmp_path}/run:{tmp_path}/run")
    args = job.parse_args(shlex.split(requests.launch_prefix(config, "train", workdir=str(REPO)))[2:]
                             + ["python", "-m", "effnet", "train"])
    assert job.srun_command(args) == [
        "srun", "--nodes=1", "--ntasks=2", "--ntasks-per-node=2", "--kill-on-bad-exit=0", "--wait=60", "--mpi=none",
        "--gpu-bind=none", "--cpus-per-task=2", *options, "python", "-m", "effnet", "train"]
    assert job.local_command(args) == ["horovodrun", "--gloo", "-np", "2", "-H", "localhost:2",
                                       "python", "-m", "effnet", "train"]
    pmix = demo_config(nodes=2, gpus_per_node=8, mpi="pmi2")
    args = job.parse_args(shlex.split(requests.launch_prefix(pmix, "train"))[2:] + ["python", "x.py"])
    assert job.srun_command(args)[:7] == ["srun", "--nodes=2", "--ntasks=16", "--ntasks-per-node=8",
                                             "--kill-on-bad-exit=0", "--wait=60", "--mpi=pmi2"]
    # a single-task stage: in the helper's own step without an image, else an overlapping step in the image
    args = job.parse_args(shlex.split(requests.launch_prefix(plain, "index"))[2:] + ["python", "-m", "effnet"])
    assert job.srun_command(args) is None and job.local_command(args) == ["python", "-m", "effnet"]
    args = job.parse_args(shlex.split(requests.launch_prefix(config, "index", str(REPO)))[2:] + ["python"])
    assert job.srun_command(args, {"SLURM_CPUS_PER_TASK": "3"}) == [
        "srun", "--overlap", "--nodes=1", "--ntasks=1", "--cpus-per-task=3", *options, "python"]
    # the training benchmark's driver: its attempt checked against its ledger, run as it is in the job's step (it
    # starts each rank count's workers through the rule's full prefix), never in a container or srun of its own
    args = job.parse_args(shlex.split(requests.launch_prefix(config, "benchmark_train", attempt=2, driver=True))[2:]
                          + ["python", "-m", "effnet", "benchmark", "train"])
    assert (args.attempt, args.ledger) == (2, tmp_path / "run/logs/benchmark_train.attempts.jsonl")
    assert job.srun_command(args) is None
    assert job.local_command(args) == ["python", "-m", "effnet", "benchmark", "train"]


def test_the_apptainer_image_is_the_configured_one_or_the_imported_dockerfile_image():
    assert requests.apptainer_image(demo_config()) == "/shared/containers/effnet.sqsh"
    assert requests.apptainer_image(demo_config(container_image=IMAGE)) == f"docker://{IMAGE}"
    assert requests.apptainer_image(demo_config(container_image="./effnet.sqsh")) == "./effnet.sqsh"


def test_an_attempt_runs_or_not_by_how_the_earlier_attempts_of_its_series_ended(tmp_path, monkeypatch, capsys):
    """Snakemake resubmits every failure alike; the launcher decides from the rule's ledger: continuations
    (75) always resume, a configuration or data error (2) is not retried, crashes crash_retries times."""
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    ledger, marker = tmp_path / "logs/train.attempts.jsonl", tmp_path / "ran"

    def attempt(n: int, status: int, crash_retries: int = 2) -> tuple[int, bool]:
        marker.unlink(missing_ok=True)
        code = job.main(["--rule", "train", "--attempt", str(n), "--ledger", str(ledger), "--crash-retries",
                            str(crash_retries), "--", sys.executable, "-c",
                            f"open({str(marker)!r}, 'w'); raise SystemExit({status})"])
        return code, marker.exists()

    assert [attempt(1, 75), attempt(2, 75), attempt(3, 2), attempt(4, 0)] == [
        (75, True), (75, True), (2, True), (2, False)]
    assert "attempt 3 ended with status 2 (a configuration or data error" in capsys.readouterr().err
    # Snakemake run again (attempt 1): a new series; crashes are retried twice, continuations between them free
    assert [attempt(1, 1), attempt(2, 70), attempt(3, 75), attempt(4, 1), attempt(5, 0)] == [
        (1, True), (70, True), (75, True), (1, True), (1, False)]
    assert "3 attempts crashed (statuses [1, 70, 1]" in capsys.readouterr().err
    # an attempt killed before it could record its status (SIGKILL at the limit, a lost node) is a crash
    assert attempt(1, 0) == (0, True)
    with open(ledger, "a") as f:
        f.write(json.dumps({"attempt": 1, "start": "now"}) + "\n")
    assert attempt(2, 0, crash_retries=0) == (1, False)
    assert "statuses [None]; None = killed" in capsys.readouterr().err
    # a line torn by a kill mid-write is skipped, named, and the ledger still decides
    with open(ledger, "a") as f:
        f.write('{"attempt": 1, "sta')
    assert attempt(1, 75) == (75, True)
    torn = len(ledger.read_text().splitlines()) - 2  # then the attempt's start and status, each on its own line
    assert f"{ledger}:{torn}: not a JSON line" in capsys.readouterr().err
    assert attempt(2, 1, crash_retries=0) == (1, True)  # attempt 1 counted: a continuation, then a first crash


def test_local_ranks_through_horovodrun_end_with_their_own_status_not_horovodruns(tmp_path, monkeypatch, capfd):
    """horovodrun exits 1 whatever its ranks did: a full disk (74) on every rank must still reach the ledger as 74."""
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    ledger = tmp_path / "train.attempts.jsonl"
    code = job.main(["--rule", "train", "--tasks-per-node", "2", "--gpus-per-task", "1", "--attempt", "1", "--ledger",
                     str(ledger), "--", sys.executable, "-c", f"raise SystemExit({EXIT_NO_SPACE})"])
    assert code == EXIT_NO_SPACE, capfd.readouterr()
    assert f"exit with status code {EXIT_NO_SPACE}." in capfd.readouterr().out  # horovodrun's lines still shown
    assert json.loads(ledger.read_text().splitlines()[-1])["status"] == EXIT_NO_SPACE
    assert job.main(["--rule", "train", "--tasks-per-node", "2", "--gpus-per-task", "1", "--", sys.executable, "-c",
                     "pass"]) == 0


def test_a_full_disk_is_not_retried_and_the_refusal_names_the_attempts_log(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    logs = tmp_path / "logs"
    logs.mkdir()
    ledger, marker = logs / "train.attempts.jsonl", tmp_path / "ran"
    (logs / "train.log").touch()  # the rule's log, hard-linked per attempt as the workflow's KEEP_LOG does
    os.link(logs / "train.log", logs / "train.log.1")

    def attempt(n: int, status: int) -> tuple[int, bool]:
        marker.unlink(missing_ok=True)
        code = job.main(["--rule", "train", "--attempt", str(n), "--ledger", str(ledger), "--", sys.executable,
                         "-c", f"open({str(marker)!r}, 'w'); raise SystemExit({status})"])
        return code, marker.exists()

    assert [attempt(1, EXIT_NO_SPACE), attempt(2, 0)] == [(EXIT_NO_SPACE, True), (EXIT_NO_SPACE, False)]
    assert (f"train attempt 2: attempt 1 ended with status {EXIT_NO_SPACE} (a full file system or quota, which "
            f"fails the next attempt the same way; see {logs}/train.log.1): not retried") in capsys.readouterr().err
    assert json.loads(ledger.read_text().splitlines()[1]) == {"attempt": 1, "job": None, "status": EXIT_NO_SPACE,
                                                              "log": f"{logs}/train.log.1"}


HOG = "import time; hog = b'x' * ({} << 20); time.sleep(1)"  # a stage that holds that many MiB


def test_a_stage_killed_for_memory_is_retried_with_twice_the_memory_up_to_the_cap(tmp_path):
    """Without SLURM: the stage in a memory-limited cgroup shared with its launcher, as a SLURM job's task/cgroup
    puts them; the launcher tells the OOM kill from other deaths, and the next request doubles, capped."""
    config = demo_config(max_mem_mb=5000)
    config["run_dir"] = str(tmp_path)
    ledger = tmp_path / "logs/prepare.attempts.jsonl"

    def attempt(n: int, stage: str) -> subprocess.CompletedProcess:
        with memory_limited(200) as join:
            return subprocess.run([sys.executable, str(REPO / "workflow/scripts/launch.py"), "--rule", "prepare",
                                   "--attempt", str(n), "--ledger", str(ledger), "--", sys.executable, "-c", stage],
                                  capture_output=True, text=True, preexec_fn=join, timeout=HANG_GUARD)

    assert requests.memory_mb(config, "prepare", 1) == 4000  # the configured; a first attempt reads nothing
    first = attempt(1, HOG.format(400))
    assert first.returncode == 137, first.stderr
    assert "launch: prepare: the stage ended for memory (1 OOM kill(s) in the stage's cgroup)" in first.stderr
    assert json.loads(ledger.read_text().splitlines()[-1])["ended"] == "memory"
    assert requests.memory_mb(config, "prepare", 2) == 5000  # 8000, capped by cluster.max_mem_mb
    config["cluster"]["max_mem_mb"] = None
    assert requests.memory_mb(config, "prepare", 2) == 8000  # no cap: sinfo does not answer away from a cluster
    second = attempt(2, "raise SystemExit(1)")  # a crash, not for memory
    # what each had: its cgroup's limit (this test's 200 MB both times; the next test has SLURM's)
    assert second.returncode == 1 and "attempt 1 ended for memory with 200 MB; this one has 200" in second.stderr
    assert "ended" not in json.loads(ledger.read_text().splitlines()[-1])
    assert requests.memory_mb(config, "prepare", 3) == 8000  # doubled once: one attempt ended for memory
    # a time limit (75), or a data error (2) even after an OOM kill in the stage's cgroup, is not for memory
    hog_then = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {HOG.format(400)!r}]); sys.exit({{}})"
    assert attempt(3, hog_then.format(75)).returncode == 75
    assert attempt(4, hog_then.format(2)).returncode == 2
    assert [e.get("ended") for e in map(json.loads, ledger.read_text().splitlines()) if "status" in e][-2:] == [
        None, None]
    assert requests.memory_mb(config, "prepare", 5) == 8000
    assert "attempt 4 ended with status 2" in attempt(5, "pass").stderr  # refused, as any data error


def test_unworkable_cluster_values_are_refused():
    config = demo_config(signal_seconds=1800)  # the demo's train limit is 30 min
    with pytest.raises(requests.LaunchError, match="signal_seconds"):
        requests.rule_resources(config, "train")
    config = demo_config(max_runtime=15)
    with pytest.raises(requests.LaunchError, match="prepare.runtime=20 exceeds"):
        requests.launch_prefix(config, "prepare")


def snakemake_env(extra_path: str = "") -> dict:
    venv_bin = os.path.dirname(sys.executable)
    return {**os.environ, "PATH": f"{extra_path}{venv_bin}:{os.environ['PATH']}"}


@pytest.mark.parametrize("override, message", [
    ("cluster: {mpi: openmpi}", "instance['cluster']['mpi']"),
    ("cluster: {container_mounts: '/a:/b, /c'}", "instance['cluster']['container_mounts']"),
    ("cluster: {signal_seconds: 7200}", "signal_seconds=7200"),
    ("cluster: {jobs: {train: {runtime: 0}}}", "instance['cluster']['jobs']['train']['runtime']"),
])
def test_a_bad_value_stops_before_any_submission(tmp_path, override, message):
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("sbatch", "srun"):  # would leave a trace if anything were submitted
        (fake / name).write_text(f"#!/bin/sh\ntouch {tmp_path}/submitted\nexit 1\n")
        (fake / name).chmod(0o755)
    (tmp_path / "bad.yaml").write_text(f"run_dir: {tmp_path}/run\n{override}\n")
    proc = subprocess.run([*SNAKEMAKE, "all", "--profile", "profiles/slurm", "--configfile",
                           "config/config.yaml", str(tmp_path / "bad.yaml")], cwd=REPO, capture_output=True,
                          text=True, env=snakemake_env(f"{fake}:"), timeout=HANG_GUARD)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "submitted").exists() and not (tmp_path / "run").exists()


def test_local_profile_plans_the_same_dag(tmp_path):
    proc = subprocess.run([*SNAKEMAKE, "all", "-n", "--profile", "profiles/local",
                           "--configfile", "config/config.yaml", str(_write(tmp_path / "o.yaml", {
                               "run_dir": str(tmp_path / "run")}))],
                          cwd=REPO, capture_output=True, text=True, env=snakemake_env(), timeout=HANG_GUARD)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-2000:]
    for rule in ("demo_data", "prepare", "index", "train", "evaluate", "export", "infer"):
        assert f"rule {rule}:" in out
    assert "workflow/scripts/launch.py --rule train" in out and "--container" not in out


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_readme_documents_the_commands_the_tests_run():
    commands = readme_commands()
    assert DEMO_COMMAND.format(override="my-cluster.yaml") in commands
    assert "snakemake all --profile profiles/slurm --configfile config/imagenet-b0.yaml" in commands
    assert "snakemake all --profile profiles/local --configfile config/imagenet-b0.yaml" in commands


# -- a real SLURM cluster ----------------------------------------------------------------------------
DEMO_COMMAND = "snakemake all --profile profiles/slurm --configfile config/config.yaml {override}"


def stop_steps(run: Path) -> list[int]:
    """The steps at which the train stage checkpointed after a stop signal, in order."""
    return [r["data"]["checkpoint_step"] for r in read_records(run / "train/train.dllog.json")
            if r.get("step") == "PARAMETER" and "checkpoint_step" in r["data"]]


def squeue(env: dict, after: int = 0) -> dict[int, tuple[str, str, str]]:
    """SLURM's view of the jobs numbered above ``after`` (a worker's tests share its cluster):
    each job's rule (the plugin's comment), time limit and state."""
    jobs = {}
    for line in subprocess.run(["squeue", "--states=all", "-h", "-o", "%i|%k|%l|%T"], env=env, capture_output=True,
                               text=True, check=True).stdout.splitlines():
        job, comment, limit, state = line.split("|")
        if int(job) > after:
            jobs[int(job)] = (comment, limit, state)
    return jobs


# What runs on every SLURM version (a test's id names it: [22.05], [24.11]); the rest runs on Debian's 22.05.
EVERY_SLURM = pytest.mark.parametrize("slurm", list(SLURMS), indirect=True)


@pytest.fixture(scope="session", params=["22.05"])
def slurm(request):
    """The SLURM version a cluster runs (22.05 unless a test asks for EVERY_SLURM)."""
    return SLURMS[request.param]


@pytest.fixture(scope="session")
def cluster(slurm, tmp_path_factory):
    yield from _started_cluster(tmp_path_factory, nodes=1, slurm=slurm)


def _started_cluster(tmp_path_factory, nodes: int, slurm, accounting: bool = False):
    """A running cluster of ``nodes`` nodes of ``slurm`` for this pytest-xdist worker, stopped afterwards. Without
    root or Debian's SLURM every cluster test is skipped, naming why; a missing further version fails its tests
    (`./setup.sh test` builds it)."""
    why = unavailable(nodes)
    if why:
        pytest.skip(why)
    why = unavailable(nodes, slurm)
    if why:
        pytest.fail(why)
    # one cluster per pytest-xdist worker (gw0, gw1, ...), size and version, on its own ports, side by side
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:])
    index = list(SLURMS).index(slurm.version)
    cluster = Cluster(tmp_path_factory.mktemp(f"slurm{slurm.version}-{nodes}"), slurm=slurm, nodes=nodes,
                      accounting=accounting,
                      port=16817 + 2 * (worker + 10 * (nodes - 1) + 20 * index + 40 * accounting))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def accounted(slurm, tmp_path_factory):
    """A one-node cluster with slurmdbd on MariaDB: sacct answers, and squeue forgets a job seconds after it ends."""
    yield from _started_cluster(tmp_path_factory, nodes=1, slurm=slurm, accounting=True)


@pytest.mark.slow(minutes=2)
@pytest.mark.parametrize("slurm", ["24.11"], indirect=True)
def test_sacct_status_gives_jobs_squeue_forgot_their_true_end(accounted, tmp_path):
    """The profile's `slurm-status-command: sacct`, where MinJobAge is a few seconds (the squeue path needs
    600 s): a DAG whose prepare fails for one data section and succeeds for the other ends with each job's true
    status, every job gone from squeue by then."""
    run, empty = tmp_path / "run", tmp_path / "no-tfds-data"
    empty.mkdir()
    override = _write(tmp_path / "override.yaml", {
        "run_dir": str(run), "data": {"demo_images_per_class": 4}, "cluster": {"max_attempts": 1},
        "runs": {"ok": {}, "bad": {"data": {"source": "tfds", "tfds_name": "absent", "input": str(empty)}}}})
    env = accounted.env(snakemake_env())
    proc = subprocess.run([*SNAKEMAKE, "all", "--until", "prepare", "--keep-going",
                           "--profile", "profiles/slurm", "--configfile", "config/config.yaml", str(override),
                           "--slurm-status-command", "sacct", "--slurm-init-seconds-before-status-checks", "20"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=HANG_GUARD)
    out = proc.stdout + proc.stderr
    jobs = [int(j) for j in re.findall(r"submitted with SLURM jobid (\d+)", out)]
    assert proc.returncode != 0 and len(jobs) == 3, out[-6000:]  # demo data and two prepares; one failed
    def in_squeue() -> str:
        return subprocess.run(["squeue", "-h", "--states=all", "-j", ",".join(map(str, jobs))], env=env,
                              capture_output=True, text=True).stdout.strip()

    deadline = time.monotonic() + HANG_GUARD
    while in_squeue() and time.monotonic() < deadline:  # squeue forgets them within seconds (MinJobAge=2)
        time.sleep(1)
    assert not in_squeue()
    states = dict(line.split("|") for line in subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", ",".join(map(str, jobs)), "-o", "JobID,State"], env=env,
        capture_output=True, text=True, check=True).stdout.split())
    assert sorted(states.values()) == ["COMPLETED", "COMPLETED", "FAILED"], states
    failed = next(j for j, state in states.items() if state == "FAILED")
    assert f"SLURM-job '{failed}' failed, SLURM status is: 'FAILED'" in out, out[-6000:]
    assert "error: tfds dataset 'absent'" in (next((run / "data").glob("tfds-*")) / "logs/prepare.log").read_text()
    assert len(list((run / "data").glob("demo-*/tfrecords/manifest.json"))) == 1


@pytest.mark.parametrize("slurm", ["24.11"], indirect=True)
def test_ranks_killed_for_memory_in_their_own_step_are_seen_through_sacct(accounted, tmp_path):
    """The ranks' srun step has cgroups of its own, out of the launcher's sight, and the job ends FAILED (scontrol
    knows no more): sacct's OUT_OF_MEMORY for the step is what tells the launcher."""
    ledger = tmp_path / "logs/train.attempts.jsonl"
    command = [sys.executable, str(REPO / "workflow/scripts/launch.py"), "--rule", "train", "--tasks-per-node", "2",
               "--attempt", "1", "--ledger", str(ledger), "--", sys.executable, "-c", HOG.format(300)]
    subprocess.run(["sbatch", "--wait", "--ntasks=2", "--cpus-per-task=1", "--mem=200", "--no-requeue",
                    f"--output={tmp_path}/job.out", "--wrap", shlex.join(command)], env=accounted.env(snakemake_env()),
                   cwd=tmp_path, capture_output=True, text=True, timeout=HANG_GUARD)
    out = (tmp_path / "job.out").read_text()
    assert re.search(r"the stage ended for memory \(SLURM recorded OUT_OF_MEMORY for a step of job \d+\) with 200 MB",
                     out), out
    assert json.loads(ledger.read_text().splitlines()[-1])["ended"] == "memory"


@pytest.mark.slow(minutes=2)
def test_ranks_leaving_a_second_apart_report_their_status_and_a_dead_rank_ends_the_step(cluster, tmp_path):
    """Ranks that stop together (75 after a signal) leave a moment apart: the step's status is still theirs, not
    the 137 of a rank killed for being a second late. A rank that dies while the others wait ends the step within
    job.RANK_EXIT_WAIT, a crash to the ledger."""
    env = cluster.env(snakemake_env())
    ledger = tmp_path / "attempts.jsonl"

    def submit(rank0: str, rank1: str, attempt: int) -> float:
        ranks = f'if [ "$SLURM_PROCID" = 0 ]; then {rank0}; else {rank1}; fi'
        command = shlex.join([sys.executable, str(REPO / "workflow/scripts/launch.py"), "--rule", "train",
                              "--tasks-per-node", "2", "--attempt", str(attempt), "--ledger", str(ledger),
                              "--", "bash", "-c", ranks])
        start = time.monotonic()
        subprocess.run(["sbatch", "--wait", "--ntasks=2", "--cpus-per-task=1", "--mem=500", "--no-requeue",
                        f"--output={tmp_path}/job{attempt}.out", "--wrap", command], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=HANG_GUARD)
        return time.monotonic() - start

    submit("exit 75", "sleep 3; exit 75", attempt=1)
    took = submit("sleep 3600", "exit 1", attempt=2)
    statuses = [e["status"] for e in map(json.loads, ledger.read_text().splitlines()) if "status" in e]
    assert statuses[0] == 75, (tmp_path / "job1.out").read_text()
    assert statuses[1] not in (0, 75) and job.RANK_EXIT_WAIT <= took < job.RANK_EXIT_WAIT + 120, (
        statuses, took, (tmp_path / "job2.out").read_text())
    print(f"a dead rank's step ended {took:.0f} s after its submission")


@EVERY_SLURM
def test_doctor_names_each_rule_whose_request_no_node_of_its_partition_holds(cluster, monkeypatch):
    """A job that no node can hold stays PENDING for ever; doctor --cluster compares every rule's request, its
    last attempt's time limit included, with what sinfo says the partition's nodes have (here: 1 node, 8000 MB,
    2 GPUs, no time limit; a second partition of 60 min)."""
    from effnet.stages.doctor import request_checks

    env = cluster.env()
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.setenv("SLURM_CONF", env["SLURM_CONF"])
    subprocess.run(["scontrol", "create", f"PartitionName=short{cluster.port}", f"Nodes={cluster.hostname}",
                    "MaxTime=60"], env=env, check=True)
    fits = demo_config(gpus_per_node=2, mpi="none")  # the demo's jobs, ranked ones with a CPU per rank
    for rule in ("train", "benchmark_train"):
        fits["cluster"]["jobs"][rule].update(cpus=1, mem_mb=4000)
    checks = {c.name: c for c in request_checks(fits)}
    assert set(checks) == {f"request {rule}" for rule in fits["cluster"]["jobs"]}
    assert all(c.ok for c in checks.values()), [c.detail for c in checks.values() if not c.ok]
    assert checks["request train"].detail.startswith("partition test: 1 node(s) x 2 task(s), 2 CPUs, 4000 MB, 2 GPUs")

    too_big = copy.deepcopy(fits)
    too_big["cluster"].update(nodes=2, partition=f"short{cluster.port}")
    too_big["cluster"]["jobs"]["train"].update(mem_mb=64000)
    checks = {c.name: c for c in request_checks(too_big)}
    train = checks["request train"]
    assert not train.ok and train.fix and train.detail == (
        f"partition short{cluster.port}: 2 nodes > 1, 64000 MB per node > 8000, 1154 min (attempt 10) > 60")
    assert not checks["request index"].ok and "min (attempt 10) > 60" in checks["request index"].detail
    missing = copy.deepcopy(fits)
    missing["cluster"]["gpu_partition"] = "gpu"
    assert "partition gpu not in sinfo's (test, short" in {c.name: c for c in request_checks(missing)}[
        "request evaluate"].detail


def _contained(cluster: Cluster, cwd: Path, *options: str, command: str = "true",
               image: str = PYXIS_IMAGE) -> subprocess.CompletedProcess:
    """``srun --container-image=IMAGE OPTIONS sh -c COMMAND`` on the cluster, from ``cwd``."""
    return subprocess.run(["srun", f"--container-image={image}", *options, "sh", "-c", command], env=cluster.env(),
                          cwd=cwd, capture_output=True, text=True, timeout=HANG_GUARD)


@EVERY_SLURM
def test_the_pyxis_stand_in_shows_a_task_its_mounts_and_nothing_else_of_the_host(cluster, tmp_path):
    """As under Pyxis: a containerised task sees the test's files, the clone and home only through
    --container-mounts (`:ro` read-only), starts in --container-workdir, writes nothing to the host outside its
    mounts (its own /tmp and /var/tmp; the image's directories read-only), and is refused (naming the value) for a
    mount source or workdir that is not there and for an image that is neither a squashfs file nor a name in
    Pyxis' grammar."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("on the host\n")
    mark = Path.home() / f".effnet-pyxis-test-{os.getpid()}-{cluster.port}"
    mark.touch()
    try:
        seen = _contained(cluster, tmp_path, f"--container-mounts={data}:/data:ro", "--container-workdir=/data",
                          "--no-container-mount-home",
                          command=f"pwd; cat f; for p in {tmp_path} {REPO} {mark}; do test -e $p || echo hidden; "
                                  "done; touch /data/new")
        assert seen.stdout.split("\n")[:-1] == ["/data", "on the host", "hidden", "hidden", "hidden"], seen
        assert seen.returncode != 0 and "/data/new': Read-only file system" in seen.stderr, seen
        out, var_tmp = tmp_path / "out", Path(f"/var/tmp/effnet-pyxis-test-{cluster.port}")
        wrote = _contained(cluster, tmp_path, f"--container-mounts={data}:{data}",
                           command=f"mkdir -p {out} && echo x > {out}/f && echo y > {var_tmp} && cat {out}/f {var_tmp} "
                                   f"&& test -e {mark} && echo home")
        assert wrote.returncode == 0 and wrote.stdout.split() == ["x", "y", "home"], wrote  # home: no --no-...-home
        assert not out.exists() and not var_tmp.exists()
    finally:
        mark.unlink()
    image_dir = _contained(cluster, tmp_path, command="touch /etc/effnet-pyxis-test")
    assert image_dir.returncode != 0 and "Read-only file system" in image_dir.stderr, image_dir
    (tmp_path / "effnet.sqsh").write_bytes(b"hsqs" + bytes(92))  # a squashfs superblock's magic
    (tmp_path / "empty.sqsh").touch()
    for image in ("./effnet.sqsh", "nvcr.io#nvidia/tensorflow:25.02-tf2-py3", f"docker://ubuntu@sha256:{'0' * 64}"):
        assert _contained(cluster, tmp_path, image=image).returncode == 0, image
    for options, image, message in [
        ([f"--container-mounts={tmp_path}/absent:/data"], PYXIS_IMAGE,
         f"--container-mounts: {tmp_path}/absent: No such file or directory"),
        ([f"--container-mounts={data}:/data/../etc"], PYXIS_IMAGE,
         f"--container-mounts: {data}:/data/../etc: the destination must be an absolute path below / without .."),
        ([f"--container-mounts={data}:/data", f"--container-workdir={tmp_path}"], PYXIS_IMAGE,
         f"--container-workdir={tmp_path}: No such file or directory in the container"),
        ([], "./absent.sqsh", "--container-image=./absent.sqsh: No such file or directory"),
        ([], "./empty.sqsh", "--container-image=./empty.sqsh: not a squashfs file"),
        ([], IMAGE, f"--container-image={IMAGE}: a registry is written REGISTRY#IMAGE ({PYXIS_IMAGE})"),
        ([], "Team/EffNet", "--container-image=Team/EffNet: not [USER@][REGISTRY#]IMAGE[:TAG]"),
    ]:
        refused = _contained(cluster, tmp_path, *options, image=image, command="echo ran")
        assert refused.returncode != 0 and "ran" not in refused.stdout and f"fake_pyxis: {message}" in refused.stderr, (
            options, image, refused)


def test_a_stage_whose_srun_line_lacks_a_mount_fails_naming_the_path_it_cannot_see(cluster, tmp_path):
    """The srun line the launcher builds for prepare, with the data input's mount dropped: prepare, the first
    stage that reads data.input, ends as a user error (2) naming the path; the line as built prepares it."""
    images, run = tmp_path / "images", tmp_path / "run"
    subprocess.run([sys.executable, "-m", "effnet", "demo-data", "--output", str(images), "--train-per-class", "2",
                    "--val-per-class", "1"], cwd=REPO, check=True, capture_output=True)
    run.mkdir()  # as Snakemake makes a rule's log folder before its job starts
    config = demo_config(container_image=IMAGE)
    config["run_dir"] = str(run)
    config["data"].update(source="folders", input=str(images))
    prefix = shlex.split(requests.launch_prefix(config, "prepare", workdir=str(REPO)))
    stage = [sys.executable, "-m", "effnet", "prepare", "--source", "folders", "--input", str(images), "--output",
             str(run / "records"), "--train-shards", "2", "--val-shards", "1", "--workers", "1"]
    line = job.srun_command(job.parse_args(prefix[2:] + stage), environ={})
    at = next(i for i, option in enumerate(line) if option.startswith("--container-mounts="))
    mounts = line[at].split("=", 1)[1].split(",")
    assert f"{images}:{images}" in mounts
    without = [*line[:at], f"--container-mounts={','.join(m for m in mounts if m != f'{images}:{images}')}",
               *line[at + 1:]]
    env = cluster.env()
    failed = subprocess.run(without, env=env, cwd=REPO, capture_output=True, text=True, timeout=HANG_GUARD)
    assert failed.returncode == 2 and f"error: {images}/train: train directory not found" in failed.stderr, failed
    assert not (run / "records/manifest.json").exists()
    prepared = subprocess.run(line, env=env, cwd=REPO, capture_output=True, text=True, timeout=HANG_GUARD)
    assert prepared.returncode == 0 and (run / "records/manifest.json").exists(), prepared


@EVERY_SLURM
def test_a_stage_that_fills_its_disk_in_a_job_is_refused_at_once_the_next_time(cluster, tmp_path):
    """The index stage writing to a full tmpfs in a SLURM job: its log names the path and the space left, the
    ledger records EXIT_NO_SPACE, and the next attempt's job ends at once (the same quota would fail alike)."""
    if os.geteuid() != 0:
        pytest.fail("a full file system is simulated on a size-limited tmpfs, which only root can mount here")
    images, records, small = tmp_path / "images", tmp_path / "records", tmp_path / "small"
    run_cli = [sys.executable, "-m", "effnet"]
    subprocess.run([*run_cli, "demo-data", "--output", str(images), "--train-per-class", "2", "--val-per-class", "1"],
                   cwd=REPO, check=True, capture_output=True)
    subprocess.run([*run_cli, "prepare", "--source", "folders", "--input", str(images), "--output", str(records),
                    "--train-shards", "2", "--val-shards", "1", "--workers", "1"], cwd=REPO, check=True,
                   capture_output=True)
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        with open(small / "filler", "wb") as f:  # all of it
            f.write(b"\0" * shutil.disk_usage(small).free)
        ledger, env = tmp_path / "logs/index.attempts.jsonl", cluster.env(snakemake_env())

        def submit(attempt: int) -> tuple[float, str]:
            command = shlex.join([sys.executable, str(REPO / "workflow/scripts/launch.py"), "--rule", "index",
                                  "--attempt", str(attempt), "--ledger", str(ledger), "--", *run_cli, "index",
                                  "--tfrecords", str(records), "--output", str(small / "index")])
            start = time.monotonic()
            subprocess.run(["sbatch", "--wait", "--ntasks=1", "--mem=500", "--no-requeue", f"--chdir={REPO}",
                            f"--output={tmp_path}/job{attempt}.out", "--wrap", command], env=env,
                           capture_output=True, text=True, timeout=HANG_GUARD)
            return time.monotonic() - start, (tmp_path / f"job{attempt}.out").read_text()

        _, first = submit(1)
        assert re.search(rf"^error: index: {re.escape(str(small))}/index\S*: no space left on its file system "
                         rf"\(0 B free of 1\.0 MiB on {re.escape(str(small))}\)", first, re.M), first
        took, second = submit(2)
        assert f"index attempt 2: attempt 1 ended with status {EXIT_NO_SPACE} (a full file system or quota" in second
        assert "-m effnet index" not in second, second  # refused before the stage started
        statuses = [e["status"] for e in map(json.loads, ledger.read_text().splitlines()) if "status" in e]
        assert statuses == [EXIT_NO_SPACE], statuses  # the refused attempt never started: nothing to record
        print(f"the refused attempt's job took {took:.1f} s")
    finally:
        subprocess.run(["umount", "--lazy", str(small)], check=True)


@EVERY_SLURM
def test_a_job_past_its_memory_is_seen_so_and_the_next_asks_for_twice_as_much(cluster, tmp_path, monkeypatch):
    """task/cgroup with ConstrainRAMSpace kills a stage past its job's --mem; the launcher records that it ended for
    memory, the next request doubles (capped by the partition's node memory, which sinfo gives) and the next
    attempt's log says what it had and has. A job killed before its launcher could record is seen through SLURM."""
    for name, value in cluster.env().items():
        monkeypatch.setenv(name, value)
    config = demo_config()
    config["run_dir"], config["cluster"]["jobs"]["prepare"]["mem_mb"] = str(tmp_path), 150
    ledger = tmp_path / "logs/prepare.attempts.jsonl"

    def submit(attempt: int, hog_mb: int, launched: bool = True) -> tuple[str, str]:
        command = [sys.executable, "-c", HOG.format(hog_mb)]
        if launched:
            command = [sys.executable, str(REPO / "workflow/scripts/launch.py"), "--rule", "prepare", "--attempt",
                       str(attempt), "--ledger", str(ledger), "--", *command]
        mem = requests.memory_mb(config, "prepare", attempt)
        out = subprocess.run(["sbatch", "--parsable", "--wait", "--ntasks=1", f"--mem={mem}", "--no-requeue",
                              f"--output={tmp_path}/job{attempt}.out", "--wrap", shlex.join(command)],
                             capture_output=True, text=True, timeout=HANG_GUARD).stdout.strip()
        return out.split(";")[0], (tmp_path / f"job{attempt}.out").read_text()

    job_id, first = submit(1, 400)
    assert "the stage ended for memory (1 OOM kill(s) in the stage's cgroup) with 150 MB" in first, first
    assert job.memory.slurm_says_out_of_memory(job_id) is True  # the batch step's OOM kill, as SLURM saw it
    _, second = submit(2, 200)
    assert "prepare attempt 2: attempt 1 ended for memory with 150 MB; this one has 300 MB" in second, second
    assert [e.get("ended") for e in map(json.loads, ledger.read_text().splitlines()) if "status" in e] == [
        "memory", None]
    config["cluster"]["jobs"]["prepare"]["mem_mb"] = 5000
    assert requests.memory_mb(config, "prepare", 2) == cluster.memory_mb  # 10000, capped by the nodes' 8000
    # a job killed whole (its launcher too) leaves only its start in the ledger: SLURM says why it ended
    config["cluster"]["jobs"]["prepare"]["mem_mb"] = 100
    job_id, _ = submit(1, 400, launched=False)
    ledger.write_text(json.dumps({"attempt": 1, "job": job_id, "start": "now"}) + "\n")
    assert requests.memory_mb(config, "prepare", 2) == 200


@pytest.mark.slow(minutes=2)
def test_snakemake_resubmits_a_prepare_killed_for_memory_with_twice_the_memory(cluster, tmp_path):
    """The workflow as users run it: prepare's worker decoding a 10000 x 10000 image (about 0.8 GB at its peak)
    is killed by the job's cgroup at mem_mb 700; the stage names it, the launcher records it, Snakemake's next
    submission asks for 1400 MB and completes."""
    images, run = tmp_path / "images", tmp_path / "run"
    write_demo(images, train_per_class=2, val_per_class=1)
    big = next((images / "train").rglob("*.jpg"))
    Image.new("RGB", (10000, 10000), (90, 120, 200)).save(big.with_suffix(".png"))
    big.unlink()
    override = _write(tmp_path / "override.yaml", {
        "run_dir": str(run), "data": {"source": "folders", "input": str(images)},
        "cluster": {"jobs": {"prepare": {"mem_mb": 700}}}})
    proc = subprocess.run([*SNAKEMAKE, "all", "--until", "prepare", "--profile", "profiles/slurm", "--configfile",
                           "config/config.yaml", str(override)], cwd=REPO, env=cluster.env(snakemake_env()),
                          capture_output=True, text=True, timeout=HANG_GUARD)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    logs = run / "logs"  # one data section: the run's
    first, second = ((logs / f"prepare.log.{n}").read_text() for n in (1, 2))
    assert "was killed for memory by the kernel's OOM killer" in first, first[-3000:]
    assert re.search(r"the stage ended for memory \(\d+ OOM kill\(s\) in the stage's cgroup\) with 700 MB", first)
    assert "prepare attempt 2: attempt 1 ended for memory with 700 MB; this one has 1400 MB" in second, second
    assert [e.get("ended") for e in map(json.loads, (logs / "prepare.attempts.jsonl").read_text().splitlines())
            if "status" in e] == ["memory", None]
    assert (run / "tfrecords/manifest.json").exists()


# Training long enough to be signalled in its first attempt on any machine: an 8 min limit with SIGUSR1 430 s
# before it (SLURM sends it up to ~30 s early or late, so 20-80 s after the start). A signal during start-up
# is kept (the handler is installed before TensorFlow), so the ranks checkpoint at their first vote (step 10,
# log_every), which took 35 s for 2 ranks of the test-sized model on the idle 2-core machine, longer while
# other tests share it (pytest-xdist): far inside the limit, and the attempt ends as soon as the checkpoint is
# saved. 60 epochs of the demo's 15 steps of 2 ranks x 32 images take ~70 s idle (0.078 s a step) after that
# start-up, so the run outlasts the signal's latest arrival; no periodic checkpoint (the one resumed from is
# the signal's). The retry gets 20 min (signal at 770 s), several times what it needs; a rank of it is killed
# 20 steps after its resume, and the third attempt (50 min) resumes from the same checkpoint.
EPOCHS, STEPS_PER_EPOCH = 60, 15
TRAIN_STEPS = EPOCHS * STEPS_PER_EPOCH


def _time(job: int, field: str, env: dict) -> float:
    """A job's SubmitTime/StartTime/EndTime (scontrol) as a Unix time."""
    shown = subprocess.run(["scontrol", "show", "job", str(job)], env=env, capture_output=True, text=True,
                           check=True).stdout
    return datetime.fromisoformat(re.search(rf"\b{field}=(\S+)", shown).group(1)).timestamp()


def _kill_a_rank_of_the_retry(env: dict, before: int, run: Path, snakemake: subprocess.Popen) -> tuple[int, float]:
    """SIGKILL rank 1 of the resubmitted train job once it has trained 20 steps past its resume; its job and
    the time of the kill."""
    log = run / "train/train.dllog.json"
    deadline = time.monotonic() + HANG_GUARD
    while time.monotonic() < deadline and snakemake.poll() is None:
        trains = sorted(j for j, (rule, _, state) in squeue(env, before).items() if rule == "rule_train")
        try:
            records = read_records(log) if len(trains) == 2 and log.exists() else []
        except ValueError:  # a record being written
            records = []
        resumed = [r["data"]["resumed_from_step"] for r in records if "resumed_from_step" in r.get("data", {})]
        steps = [r["step"][1] for r in records if isinstance(r.get("step"), list) and len(r["step"]) == 2]
        if resumed and steps and steps[-1] >= resumed[-1] + 20:
            # job ids repeat across the clusters of tests running side by side: the cluster's SLURM_CONF tells
            rank1 = python_with_env(SLURM_JOB_ID=str(trains[1]), SLURM_PROCID="1", SLURM_CONF=env["SLURM_CONF"])
            os.kill(rank1, signal.SIGKILL)
            return trains[1], time.time()
        time.sleep(0.5)
    raise AssertionError("the resubmitted train job never trained 20 steps past its resume")


@pytest.mark.slow(minutes=14)
@EVERY_SLURM
def test_demo_dag_on_slurm_with_pyxis_a_time_limit_resume_and_a_killed_rank(cluster, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    run = tmp_path / "run"
    override = _write(tmp_path / "override.yaml", {
        "run_dir": str(run), "model": {"arch": TEST_ARCH},
        "train": {"epochs": EPOCHS, "eval_every": None, "log_every": 10, "checkpoint_every": 100},
        "benchmark": {"precisions": ["fp32"], "train_batch_sizes": [8], "warmup_steps": 1, "steps": 2,
                      "inference_max_batch": 2, "inference_warmup": 1, "inference_steps": 2},
        "cluster": {"gpus_per_node": 2, "mpi": "none", "container_image": IMAGE,
                    "container_mounts": f"{data}:/data", "signal_seconds": 430, "runtime_growth": 2.5,
                    "jobs": {"train": {"runtime": 8, "cpus": 1, "mem_mb": 4000},
                             "benchmark_train": {"cpus": 1, "mem_mb": 4000}}},  # 2 ranks on the 2-CPU node
    })
    command = shlex.split(DEMO_COMMAND.format(override=override))
    assert command[0] == "snakemake"
    # The plugin waits this long before a job's first status check, and 10 s more after each check that finds
    # nothing finished: 2 s instead of the profile's 10 sees the short stages end sooner.
    command += ["--slurm-init-seconds-before-status-checks", "2"]
    env = cluster.env(snakemake_env())
    before = max(squeue(env), default=0)
    env["PATH"] = f"{cluster.bin}:{env['PATH']}"
    start = time.monotonic()
    with open(tmp_path / "snakemake.out", "w") as output:
        proc = subprocess.Popen([sys.executable, "-m", *command, SIDE_BY_SIDE], cwd=REPO, env=env, stdout=output,
                                stderr=subprocess.STDOUT)
        try:
            killed_job, killed_at = _kill_a_rank_of_the_retry(env, before, run, proc)
            proc.wait(timeout=HANG_GUARD)
        finally:
            proc.kill()
    took = time.monotonic() - start
    out = (tmp_path / "snakemake.out").read_text()
    assert proc.returncode == 0, f"{out[-6000:]}\n{cluster.logs()}"
    print(f"demo DAG through SLURM: {took:.0f} s")

    # every stage ran, training resumed after its time limit with the steps of an uninterrupted run
    summary = trained_run.load_summary(run / "train")
    assert summary["steps"] == TRAIN_STEPS and summary["world_size"] == 2
    assert summary["resumed_from_step"] and 0 < summary["resumed_from_step"] < TRAIN_STEPS
    # from the checkpoint the signal asked for (rank 0 finished it before rank 1 exited and srun ended the step)
    assert stop_steps(run) == [summary["resumed_from_step"]]
    assert json.loads((run / "evaluate/metrics.json").read_text())["examples"] == 250
    assert (run / "export/export.json").exists() and (run / "infer/predictions.csv").exists()
    bench = benchmark_results.load(run / "benchmark", "train")  # 1 and all (2) ranks of the train job
    one, two = sorted(bench["rows"], key=lambda r: r["ranks"])
    assert (one["ranks"], two["ranks"]) == (1, 2) and one["device"] == two["device"] == "CPU"
    # 2 ranks: each rank's batch / its mean step, summed; weak scaling against 1 rank
    assert two["img_per_sec"] >= 8 / np.mean(two["step_seconds"]) and two["weak_scaling"] == pytest.approx(
        two["img_per_sec"] / (2 * one["img_per_sec"]))
    assert (run / "report/report.html").exists() and "## Missing" not in (run / "report/report.md").read_text()

    jobs = squeue(env, after=before)
    train_jobs = sorted(j for j, (c, _, _) in jobs.items() if c == "rule_train")
    assert len(train_jobs) == 3 and train_jobs[1] == killed_job, jobs  # after the signal and after the kill
    assert [jobs[j][1] for j in train_jobs] == ["8:00", "20:00", "50:00"]  # runtime x 2.5 per retry
    assert jobs[train_jobs[0]][2] in ("FAILED", "TIMEOUT") and [jobs[j][2] for j in train_jobs[1:]] == [
        "FAILED", "COMPLETED"]
    # the dead rank's step ends within srun's wait, and Snakemake resubmits at its next status check
    ended, resubmitted = _time(killed_job, "EndTime", env), _time(train_jobs[2], "SubmitTime", env)
    assert ended - killed_at <= 120, (killed_at, ended)
    print(f"a killed rank: its job ended {ended - killed_at:.0f} s later, resubmitted after "
          f"{resubmitted - killed_at:.0f} s")
    for job_id in jobs:  # Snakemake alone resubmits: SLURM never requeues a job behind its back
        shown = subprocess.run(["scontrol", "show", "job", str(job_id)], env=env, capture_output=True, text=True,
                               check=True).stdout
        assert "Requeue=0" in shown, shown
    # every attempt's log is kept (Snakemake deletes the declared log as a job starts); train.log is the last
    logs = run / "logs"
    first = (logs / "train.log.1").read_text()
    assert "stopped_by_signal" in first and f'"container": {{"EFFNET_CONTAINER_IMAGE": "{PYXIS_IMAGE}"}}' in first
    assert all("resumed_from_step" in (logs / f"train.log.{n}").read_text() for n in (2, 3))
    assert (logs / "train.log").samefile(logs / "train.log.3") and not (logs / "train.log.4").exists()
    ledger = [json.loads(line) for line in (logs / "train.attempts.jsonl").read_text().splitlines()]
    assert [(e["attempt"], int(e["job"])) for e in ledger] == [(n, j) for n, j in enumerate(train_jobs, 1)
                                                                for _ in range(2)]
    assert [e.get("status") for e in ledger][::2] == [None] * 3  # each attempt's start
    killed = ledger[3]["status"]  # a crash, retried (cluster.crash_retries), between two continuations
    assert [e.get("status") for e in ledger][1::2] == [75, killed, 0] and killed not in (None, 0, 75, 2), ledger

    # Pyxis options: exactly on the srun that starts each stage, never on a batch script or Snakemake
    mounts = f"{data}:/data,{REPO}:{REPO},{run}:{run}"
    records = cluster.pyxis_records()
    mine = [r for r in records if r["job"] in jobs and jobs[r["job"]][0].startswith("rule_")]
    stages = {}
    for r in mine:
        if r["step"] == BATCH_STEP or "-m snakemake" in r["argv"]:
            assert r["image"] is None and r["mounts"] is None, r
            continue
        stage = re.search(r"-m effnet (\S+)", r["argv"]).group(1)
        stages.setdefault(stage, []).append(r)
        assert (r["image"], r["mounts"], r["workdir"], r["no_mount_home"]) == (PYXIS_IMAGE, mounts, str(REPO), True)
    assert sorted(stages) == ["benchmark", "demo-data", "evaluate", "export", "index", "infer", "prepare", "report",
                              "train"]
    by_job = {}
    for r in stages["train"]:
        by_job.setdefault(r["job"], []).append(r["task"])
    assert {j: sorted(t) for j, t in by_job.items()} == {j: [0, 1] for j in train_jobs}  # one srun of 2 ranks each


@pytest.mark.slow(minutes=3)
def test_the_runs_of_a_batch_train_as_jobs_of_their_own_side_by_side(cluster, tmp_path):
    run = tmp_path / "batch"
    override = _write(tmp_path / "batch.yaml", {
        "run_dir": str(run), "data": {"demo_images_per_class": 10}, "model": {"arch": TEST_ARCH},
        "train": {"epochs": 2, "steps_per_epoch": 3, "eval_every": None}, "sweep": {"train.seed": [0, 1]},
        "cluster": {"container_image": IMAGE,  # every stage of every run in the stand-in Pyxis' container
                    "jobs": {"train": {"cpus": 1, "mem_mb": 2000}}}})  # both fit the 2-CPU node at once
    env = cluster.env(snakemake_env())
    before = max(squeue(env), default=0)
    env["PATH"] = f"{cluster.bin}:{env['PATH']}"
    proc = subprocess.run([*SNAKEMAKE, "--until", "train", "--profile", "profiles/slurm",
                           "--configfile", "config/config.yaml", str(override),
                           "--slurm-init-seconds-before-status-checks", "2"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=HANG_GUARD)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{out[-6000:]}\n{cluster.logs()}"
    jobs = squeue(env, after=before)
    trains = sorted(j for j, (rule, _, _) in jobs.items() if rule.startswith("rule_train_"))
    assert sorted(jobs[j][0] for j in trains) == ["rule_train_wildcards_seed-0", "rule_train_wildcards_seed-1"], jobs
    assert all(jobs[j][2] == "COMPLETED" and f"submitted with SLURM jobid {j} " in out for j in trains), out[-6000:]
    first, second = ((_time(j, "StartTime", env), _time(j, "EndTime", env)) for j in trains)
    assert first[0] < second[1] and second[0] < first[1], (first, second)  # they ran at the same time
    print(f"two trains of a batch on SLURM, jobs {trains}: {first} and {second}")
    assert sorted(trained_run.load_summary(run / f"runs/seed-{seed}/train")["steps"]
                  for seed in (0, 1)) == [6, 6]
    assert len([j for j, (rule, _, _) in jobs.items() if rule.startswith("rule_prepare")]) == 1


def _train_on_slurm(cluster: Cluster, run: Path, layout: dict, epochs: int, interrupt: bool) -> dict:
    """The train rule (and the data stages it needs) through the SLURM profile with the cluster section's
    ``layout``. With ``interrupt``, its job is sent SIGUSR1 (``scancel -s USR1`` signals every step of a job but the
    batch shell, as sbatch --signal does) once it has logged 3 steps; Snakemake must resubmit it and the new job
    resume from the checkpoint the signal asked for. The train summary."""
    override = _write(run.parent / f"override-{layout['mpi']}.yaml", {
        "run_dir": str(run), "data": {"demo_images_per_class": 12}, "model": {"arch": TEST_ARCH},
        "train": {"epochs": epochs, "eval_every": None, "log_every": 1, "checkpoint_every": epochs // 2},
        "cluster": {**layout, "jobs": {"train": {"runtime": 30, "cpus": 2 // len(cluster.node_names) or 1,
                                                 "mem_mb": 4000}}},
    })
    env = cluster.env(snakemake_env())
    before = max(squeue(env), default=0)
    env["PATH"] = f"{cluster.bin}:{env['PATH']}"
    log = run / "train/train.dllog.json"
    proc = subprocess.Popen([*SNAKEMAKE, "train", "--profile", "profiles/slurm", "--configfile",
                             "config/config.yaml", str(override), "--slurm-init-seconds-before-status-checks", "2"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + HANG_GUARD
        while interrupt and proc.poll() is None and time.monotonic() < deadline and not (
                log.exists() and sum(isinstance(r.get("step"), list) for r in read_records(log)) >= 3):
            time.sleep(0.5)
        if interrupt:
            (job,) = [j for j, (rule, _, state) in squeue(env, before).items()
                      if rule == "rule_train" and state == "RUNNING"]
            signalled = time.time()
            subprocess.run(["scancel", "--signal=USR1", str(job)], env=env, check=True)
        out, _ = proc.communicate(timeout=HANG_GUARD)
    finally:
        proc.kill()
    assert proc.returncode == 0, f"{out[-6000:]}\n{cluster.logs()}"
    jobs = squeue(env, after=before)
    train_jobs = sorted(j for j, (rule, _, _) in jobs.items() if rule == "rule_train")
    assert len(train_jobs) == 1 + interrupt and jobs[train_jobs[-1]][2] == "COMPLETED"
    summary = trained_run.load_summary(run / "train")
    if interrupt:
        assert train_jobs[0] == job and stop_steps(run) == [summary["resumed_from_step"]]
        assert 3 <= summary["resumed_from_step"] < summary["steps"]
        stopped = next(r for r in read_records(log) if "checkpoint_step" in r.get("data", {}))
        print(f"{layout}: {float(stopped['timestamp']) - signalled:.1f} s from the signal to the saved checkpoint")
    return summary


@pytest.fixture(scope="session")
def two_nodes(slurm, tmp_path_factory):
    yield from _started_cluster(tmp_path_factory, nodes=2, slurm=slurm)


@pytest.mark.slow(minutes=6)
@EVERY_SLURM
def test_two_ranks_on_two_nodes_train_alike_in_both_launch_modes_and_resume_after_a_signal(two_nodes, tmp_path):
    """One rank on each of two nodes (network namespaces: the ranks meet over a network, not loopback), started
    both ways a site starts them: srun --mpi=none with a gloo rendezvous the job starts, then (the same run's
    records, trained again) srun --mpi=pmix with Horovod's MPI controller, as the production image, signalled
    mid-run: both ranks stop at the signal's step and the retry resumes. Every checkpoint holds weights both
    ranks found equal. Every stage runs in the stand-in Pyxis' container (with PMIx's directories bound in, as
    enroot's PMI hook binds them)."""
    run = tmp_path / "run"
    for mpi in ("none", "pmix"):
        summary = _train_on_slurm(two_nodes, run, {"nodes": 2, "gpus_per_node": 0, "mpi": mpi,
                                                   "container_image": IMAGE}, epochs=16, interrupt=mpi == "pmix")
        assert summary["world_size"] == 2
        digests = [checkpoints.read(ckpt)[0]["weights_digests"]
                   for ckpt in checkpoints.checkpoints(run / "train/checkpoints")]
        assert digests and all(len(d) == 2 and d[0] == d[1] for d in digests), digests
        logs = sorted((run / "logs").glob("train.log.*"))
        out = "".join(p.read_text() for p in logs)
        assert out.count("rank 1/2 local_rank 0/1") == len(logs), out  # one rank per node, in every job
        assert out.count("controller mpi" if mpi == "pmix" else "controller gloo") == 2 * len(logs), out
        shutil.rmtree(run / "train")  # the next mode trains anew
        for path in logs:
            path.unlink()
