"""The one exception type for mistakes a user can fix, how any exception is quoted in one line, and
how an exception crosses a process (as data: its type and message, never matched by its text)."""

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
    return shorten(line, limit)


def shorten(text: str, limit: int = 200) -> str:
    """`text` on one line in at most `limit` characters; when cut, between words where one ends in
    the second half, and marked with " …".

    >>> shorten("the member failed on input (8, 1, 64, 128)", 30)
    'the member failed on input …'
    """
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 2]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip() + " …"


def error_data(exc: BaseException) -> dict[str, str]:
    """An exception as data for another process (a Ray actor's rows, the Keras worker's reply): its
    type name and its message, whole for an EnsError, else its `first_line`."""
    return {"type": type(exc).__name__, "message": str(exc) if isinstance(exc, EnsError) else first_line(exc)}


def raised_error(data: dict[str, str], where: str) -> str:
    """The one line for an exception that `error_data` carried from `where`: an EnsError's message
    as it is; any other exception named by its type.

    >>> raised_error({"type": "ValueError", "message": "bad axis"}, "the worker")
    'the worker raised ValueError: bad axis'
    """
    if data["type"] == EnsError.__name__:
        return data["message"]
    return f"{where} raised {data['type']}: {data['message']}"
