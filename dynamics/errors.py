"""User-facing errors.

A :class:`UserError` is a problem with what the user asked for (unknown experiment, bad value,
missing data).  The CLI prints its message on one line and exits with code 2, before anything is
written.
"""


class UserError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""
