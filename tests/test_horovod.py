"""Horovod really runs: two gloo ranks on localhost allreduce a known tensor."""
import os
import subprocess
import sys
from pathlib import Path

from conftest import HANG_GUARD

SCRIPT = """
import horovod.tensorflow as hvd
import tensorflow as tf

hvd.init()
x = tf.constant([1.0, 2.0, 3.0]) * (hvd.rank() + 1)   # rank 0: [1 2 3], rank 1: [2 4 6]
total = hvd.allreduce(x, op=hvd.Sum)
mean = hvd.allreduce(x, op=hvd.Average)
print(f"RESULT rank={hvd.rank()} size={hvd.size()} sum={total.numpy().tolist()} mean={mean.numpy().tolist()}",
      flush=True)
"""


def test_two_gloo_ranks_allreduce(tmp_path):
    script = tmp_path / "allreduce.py"
    script.write_text(SCRIPT)
    horovodrun = Path(sys.executable).with_name("horovodrun")
    proc = subprocess.run(
        [str(horovodrun), "--gloo", "-np", "2", "-H", "localhost:2", sys.executable, str(script)],
        capture_output=True, text=True, timeout=HANG_GUARD,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = sorted(line[line.index("RESULT"):] for line in proc.stdout.splitlines() if "RESULT" in line)
    assert results == [
        "RESULT rank=0 size=2 sum=[3.0, 6.0, 9.0] mean=[1.5, 3.0, 4.5]",
        "RESULT rank=1 size=2 sum=[3.0, 6.0, 9.0] mean=[1.5, 3.0, 4.5]",
    ]
