"""tests/gpu/smoke.sh, the check for a GPU host, in its CPU mode: its commands and assertions run here, and
it names each check it skips because that needs a GPU."""
import os
import re
import subprocess

import pytest

from conftest import HANG_GUARD, REPO


@pytest.mark.slow(minutes=3)
def test_the_gpu_smoke_script_passes_in_cpu_mode_naming_what_it_skips(tmp_path):
    proc = subprocess.run(["bash", "tests/gpu/smoke.sh"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "SMOKE_MODE": "cpu", "OUT": str(tmp_path)}, timeout=HANG_GUARD)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "skipped (needs a GPU): DALI decoding and augmentation on the GPU" in out
    assert "skipped (needs a GPU): XLA on a GPU, TF32, the img/s figure" in out
    assert re.search(r"efficientnet-test step: [\d.]+ img/s on CPU \(mixed_float16, XLA False\)", out), out
    assert re.search(r"resume: ok \(stopped by SIGTERM, exit 75, resumed from step [123], 4 steps in all\)", out), out
    assert out.rstrip().endswith("smoke: all checks passed (cpu mode)")
