"""doctor reports the installed stack and names what is missing."""
import pytest


def test_doctor_passes_on_the_installed_stack(cli):
    proc = cli("doctor", check=True)
    out = proc.stdout
    assert "doctor: all required components present" in out
    lines = {line.split()[1]: line for line in out.splitlines() if line[:4] in ("ok  ", "warn", "FAIL")}
    assert "2.18.1" in lines["tensorflow"] and "keras 3." in lines["tensorflow"]
    assert "0.28.1" in lines["horovod"] and "gloo yes" in lines["horovod"]
    assert "2.4.0" in lines["dali"] and "2.4.0" in lines["dali-tf-plugin"]
    assert lines["snakemake"].split()[2].startswith("9.")
    # No GPU on the test machine: reported, but not required outside --cluster.
    assert lines["gpus"].startswith("warn")


@pytest.mark.parametrize("package, check", [
    ("horovod", "horovod"),
    ("nvidia", "dali"),
    ("snakemake_executor_plugin_slurm", "snakemake-executor-plugin-slurm"),
    ("jsonschema", "python deps"),
])
def test_doctor_fails_naming_an_unimportable_package(cli, tmp_path, package, check):
    shadow = tmp_path / package
    shadow.mkdir()
    (shadow / "__init__.py").write_text(f"raise ImportError('{package} blocked by the test')\n")
    proc = cli("doctor", env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"missing: {check}:" in proc.stdout
    assert f"{package} blocked by the test" in proc.stdout
    assert "fix:" in proc.stdout


def test_doctor_cluster_mode_requires_gpus(cli):
    proc = cli("doctor", "--cluster")
    assert proc.returncode == 1
    assert "missing: gpus:" in proc.stdout
