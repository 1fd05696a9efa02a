"""Errors caused by input (files, keys, values): reported without a traceback."""


EXIT_USER_ERROR = 2  # the exit status of a stage that reported a UserError (never retried: nothing would change)


class UserError(Exception):
    """Bad input: the message names the file, key or value and what was expected."""
