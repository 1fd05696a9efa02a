"""Errors caused by input (files, keys, values): reported without a traceback."""


class UserError(Exception):
    """Bad input: the message names the file, key or value and what was expected."""
