"""The logger writes dllogger's JSON-lines format that existing parsers read."""
import io
import json
import time
from datetime import datetime

import pytest

from effnet.formats.dllog import DLLogger, Verbosity, read_log

LOG_KEYS = {"timestamp", "datetime", "elapsedtime", "type", "step", "data"}
META_KEYS = {"timestamp", "datetime", "elapsedtime", "type", "metric", "metadata"}


def records(path):
    lines = path.read_text().splitlines()
    assert all(line.startswith("DLLL {") for line in lines), lines
    return [json.loads(line[len("DLLL "):]) for line in lines]


@pytest.mark.parametrize("step, expected", [
    ("PARAMETER", "PARAMETER"), (7, 7), ((2, 30), [2, 30]), ((), []), ([1, 2, 3], [1, 2, 3]),
])
def test_log_record_matches_dllogger_format(tmp_path, step, expected):
    path = tmp_path / "log.json"
    before = time.time()
    with DLLogger(path, stream=None) as log:
        log.log(step, {"loss": 0.25, "lr": 1e-3})
    (rec,) = records(path)
    assert set(rec) == LOG_KEYS
    assert rec["type"] == "LOG"
    assert rec["step"] == expected
    assert rec["data"] == {"loss": 0.25, "lr": 1e-3}
    # dllogger writes the three times as strings.
    assert isinstance(rec["timestamp"], str) and before - 1 <= float(rec["timestamp"]) <= time.time() + 1
    assert abs(datetime.fromisoformat(rec["datetime"]).timestamp() - float(rec["timestamp"])) < 1e-3
    assert isinstance(rec["elapsedtime"], str) and 0 <= float(rec["elapsedtime"]) <= time.time() - before


def test_metadata_record(tmp_path):
    path = tmp_path / "log.json"
    with DLLogger(path, stream=None) as log:
        log.metadata("train.loss", {"unit": None, "format": ":.4f"})
        log.log(("Epoch", 1), {"train.loss": 2.5})
    meta, entry = records(path)
    assert set(meta) == META_KEYS
    assert meta["type"] == "METADATA"
    assert meta["metric"] == "train.loss"
    assert meta["metadata"] == {"unit": None, "format": ":.4f"}
    assert entry["step"] == ["Epoch", 1]
    assert float(entry["elapsedtime"]) >= float(meta["elapsedtime"])


def test_verbosity_filters_and_appends(tmp_path):
    path = tmp_path / "log.json"
    with DLLogger(path, stream=None, verbosity=Verbosity.DEFAULT) as log:
        log.log(1, {"kept": 1}, verbosity=Verbosity.DEFAULT)
        log.log(1, {"dropped": 1}, verbosity=Verbosity.VERBOSE)
    with DLLogger(path, stream=None, verbosity=Verbosity.OFF) as log:
        log.log(2, {"off": 1}, verbosity=Verbosity.DEFAULT)
        log.metadata("off", {})
    with DLLogger(path, stream=None) as log:  # a resumed run appends
        log.log(3, {"resumed": 1})
    assert [r["data"] for r in records(path)] == [{"kept": 1}, {"resumed": 1}]


def test_a_record_cut_short_by_a_kill_is_left_out_and_the_resumed_run_writes_on_a_line_of_its_own(tmp_path):
    path = tmp_path / "log.json"
    with DLLogger(path, stream=None) as log:
        log.log(1, {"loss": 1.0})
        log.log(2, {"loss": 0.5})
    path.write_text(path.read_text()[:-30])  # the last record torn by a kill
    assert [r["step"] for r in read_log(path)[0]] == [1] and read_log(path)[1] == [2]
    with DLLogger(path, stream=None) as log:  # the resumed run
        log.log(2, {"loss": 0.5})
    records, cut = read_log(path)
    assert [r["step"] for r in records] == [1, 2] and cut == [2]


def test_readable_stream_line():
    out = io.StringIO()
    log = DLLogger(None, stream=out)
    log.log((3, 40), {"loss": 0.123456789, "img/s": 812})
    line = out.getvalue().strip()
    assert line.startswith("DLL ")
    assert line.endswith(" - 3 40 loss: 0.12346 img/s: 812")
