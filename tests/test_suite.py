"""The suite's own scheduling under pytest-xdist: a group's tests share one worker (its module fixtures run once)."""
import re
import subprocess
import sys

from conftest import HANG_GUARD

GROUPED = """
import pytest
pytestmark = pytest.mark.xdist_group("shared")

@pytest.mark.parametrize("i", range(4))
def test_grouped(i):
    pass
"""
ALONE = """
import pytest

@pytest.mark.parametrize("i", range(4))
def test_alone(i):
    pass
"""


def test_a_group_runs_on_one_worker(tmp_path):
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    (tmp_path / "test_alone.py").write_text(ALONE)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "3", "--dist",
                           "loadgroup", "-v", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=HANG_GUARD)
    assert proc.returncode == 0, proc.stdout[-3000:]
    workers = set(re.findall(r"\[(gw\d+)\] .* PASSED .*test_grouped\.py::test_grouped\[\d\]@shared", proc.stdout))
    assert len(workers) == 1, proc.stdout[-3000:]  # pytest 9.2 with xdist 3.8.0: spread over all workers
