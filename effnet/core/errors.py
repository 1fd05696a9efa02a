"""Errors caused by input (files, keys, values), reported without a traceback, and the exit statuses that tell a
stage's endings apart (the launcher's ledger decides each rule's next attempt by them, effnet.cluster.ledger)."""

EXIT_USER_ERROR = 2  # a stage reported a UserError: never retried (nothing would change)
EXIT_NO_SPACE = 74  # EX_IOERR: a write met a full file system or quota (effnet.core.diskspace): not retried either
EXIT_STALLED = 70  # EX_SOFTWARE: a training rank made no progress for train.stall_timeout seconds (a crash)
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by a signal after a checkpoint; rerun to resume
EXIT_OUT_OF_MEMORY = 137  # as a process the OOM killer ended: a stage that stops because its workers were (a crash)


class UserError(Exception):
    """Bad input: the message names the file, key or value and what was expected."""


class OutOfMemoryError(UserError):
    """A stage's worker killed by the kernel's OOM killer, again: the message says what to lower (exit 137)."""
