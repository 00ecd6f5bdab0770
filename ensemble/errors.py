"""The one exception type for mistakes a user can fix: bad input, missing files, wrong options."""


class EnsError(Exception):
    """A user-facing error; the CLI prints its message on one line and exits 1.

    Messages follow one shape: what was received, what is allowed, and a hint.
    """
