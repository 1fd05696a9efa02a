"""A rule's attempts and how each ended (``<run_dir>/logs/<rule>.attempts.jsonl``, JSON lines), and what that
means for the next one: Snakemake resubmits every failure alike, the launcher decides whether it runs, and an
attempt after one that ended for memory asks for more (``effnet.cluster.memory``). Standard library only.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from effnet.core import jsonfile
from effnet.core.errors import EXIT_NO_SPACE, EXIT_PREEMPTED, EXIT_USER_ERROR

# What an attempt's exit status means to the next one:
CONTINUE = EXIT_PREEMPTED  # stopped by a signal after a checkpoint: always resumed, within max_attempts
USER_ERROR = EXIT_USER_ERROR  # a configuration or data error the stage reported: never retried
# Endings no retry would change, and why
FINAL = {USER_ERROR: "a configuration or data error",
         EXIT_NO_SPACE: "a full file system or quota, which fails the next attempt the same way"}


def previous_attempts(ledger: Path, attempt: int) -> list[dict]:
    """The end records of this series' attempts before ``attempt`` (the start record, without a status, of one
    killed before it could record its end; {} where there is none)."""
    entries = []
    for number, line in enumerate(ledger.read_text().splitlines() if ledger.exists() else [], 1):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:  # a line torn by a kill mid-write: the rest still counts
            print(f"launch: {ledger}:{number}: not a JSON line, skipped: {line[:80]!r}", file=sys.stderr)
    starts = [i for i, e in enumerate(entries) if e.get("start") and e.get("attempt") == 1]
    series = entries[starts[-1]:] if starts else []
    ended = {e["attempt"]: e for e in series if "status" in e}
    started = {e["attempt"]: e for e in series if e.get("start")}
    return [ended.get(n) or started.get(n, {}) for n in range(1, attempt)]


def refusal(ended: list[dict], crash_retries: int) -> tuple[int, str] | None:
    """(exit status, why) when the attempt after those that ``ended`` (``previous_attempts``) must not run; None to
    run it."""
    statuses = [e.get("status") for e in ended]
    for number, entry in enumerate(ended, 1):
        if entry.get("status") in FINAL:
            status, log = entry["status"], entry.get("log") or "its log"
            return status, (f"attempt {number} ended with status {status} ({FINAL[status]}; see {log}): not "
                            "retried, fix it and run Snakemake again")
    crashes = [s for s in statuses if s not in (0, CONTINUE)]
    if len(crashes) > crash_retries:
        status = crashes[-1] if crashes[-1] is not None else 1
        return status, (f"{len(crashes)} attempts crashed (statuses {crashes}; None = killed): no more retries "
                        f"(cluster.crash_retries={crash_retries})")
    return None


def record(ledger: Path | None, entry: dict) -> None:
    """Append ``entry`` to the ledger as one line (on a line of its own after a line torn by a kill). A ledger
    that cannot be written (its file system full) is reported, not fatal: the stage's own status still counts."""
    if not ledger:
        return
    try:
        ledger.parent.mkdir(parents=True, exist_ok=True)
        with open(ledger, "ab+") as f:  # appends go to the end whatever was read
            f.write(b"\n" * jsonfile.ends_mid_line(f) + json.dumps(entry).encode() + b"\n")
    except OSError as exc:
        print(f"launch: {ledger}: this attempt's record {entry} could not be written: {exc}", file=sys.stderr,
              flush=True)


def attempt_log(ledger: Path, rule: str) -> Path | None:
    """The log of the attempt running now: the rule's log as hard-linked to LOG.N when the attempt began (the
    workflow keeps every attempt's, common.smk's KEEP_LOG), or None outside the workflow."""
    log = ledger.parent / f"{rule}.log"
    try:
        inode = log.stat().st_ino
    except OSError:
        return None
    numbered = [p for p in ledger.parent.glob(f"{rule}.log.*") if p.suffix[1:].isdigit()]
    return next((p for p in sorted(numbered, key=lambda p: -int(p.suffix[1:])) if p.stat().st_ino == inode), None)


