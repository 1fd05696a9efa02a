"""A rule's attempts and how each ended (``<run_dir>/logs/<rule>.attempts.jsonl``, JSON lines), and what that
means for the next one: Snakemake resubmits every failure alike, the launcher decides. Standard library only.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from effnet.core.errors import EXIT_PREEMPTED, EXIT_USER_ERROR

# What an attempt's exit status means to the next one:
CONTINUE = EXIT_PREEMPTED  # stopped by a signal after a checkpoint: always resumed, within max_attempts
USER_ERROR = EXIT_USER_ERROR  # a configuration or data error the stage reported: never retried


def previous_statuses(ledger: Path, attempt: int) -> list[int | None]:
    """Exit statuses of this series' attempts before ``attempt`` (None: killed before it could record one)."""
    entries = []
    for number, line in enumerate(ledger.read_text().splitlines() if ledger.exists() else [], 1):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:  # a line torn by a kill mid-write: the rest still counts
            print(f"launch: {ledger}:{number}: not a JSON line, skipped: {line[:80]!r}", file=sys.stderr)
    starts = [i for i, e in enumerate(entries) if e.get("start") and e.get("attempt") == 1]
    series = entries[starts[-1]:] if starts else []
    ended = {e["attempt"]: e["status"] for e in series if "status" in e}
    return [ended.get(n) for n in range(1, attempt)]


def refusal(statuses: list[int | None], crash_retries: int) -> tuple[int, str] | None:
    """(exit status, why) when the attempt after ``statuses`` must not run; None to run it."""
    if USER_ERROR in statuses:
        return USER_ERROR, (f"attempt {statuses.index(USER_ERROR) + 1} ended with status {USER_ERROR} (a "
                            "configuration or data error, see its log): not retried, fix it and run Snakemake again")
    crashes = [s for s in statuses if s not in (0, CONTINUE)]
    if len(crashes) > crash_retries:
        status = crashes[-1] if crashes[-1] is not None else 1
        return status, (f"{len(crashes)} attempts crashed (statuses {crashes}; None = killed): no more retries "
                        f"(cluster.crash_retries={crash_retries})")
    return None


def record(ledger: Path | None, entry: dict) -> None:
    """Append ``entry`` to the ledger as one line (on a line of its own after a line torn by a kill)."""
    if ledger:
        ledger.parent.mkdir(parents=True, exist_ok=True)
        with open(ledger, "ab+") as f:  # appends go to the end whatever was read
            torn = False
            if f.seek(0, os.SEEK_END):
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
            f.write(b"\n" * torn + json.dumps(entry).encode() + b"\n")


