"""The one exception type for mistakes a user can fix, and how any exception is quoted in one line."""

import re


class EnsError(Exception):
    """A user-facing error; the CLI prints its message on one line and exits 1.

    Messages follow one shape: what was received, what is allowed, and a hint.
    """


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message, without colour codes, at most `limit`
    characters; the exception's type name when the message is empty."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    line = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"
