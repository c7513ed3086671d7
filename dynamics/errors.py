"""User-facing errors.

A :class:`UserError` is a problem with what the user asked for (unknown experiment, bad value,
missing or corrupt data, a directory this program may not write).  The CLI prints its message on
one line and exits with code 2, before anything is written.  Any other exception is a bug: one
line, exit code 3, and ``dynamics --debug`` shows the traceback.
"""

import errno

# OS errors that describe the machine or the user's paths, not a bug: one line, exit 2
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR,
                                errno.EISDIR, errno.ENAMETOOLONG, errno.EMFILE, errno.ENFILE, errno.EIO, errno.ENOENT,
                                errno.ELOOP, errno.EXDEV})


class UserError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""
