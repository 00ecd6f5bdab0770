"""Keep the user's terminal clean while native libraries load or run.

ONNX Runtime's provider loader, torch.onnx and Keras print progress lines, warnings and logging
records from Python and from native code; all of it is captured (Python streams and file
descriptors 1 and 2) and kept, so an error message can quote it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator


class Captured:
    """Text printed inside a `quiet()` block, available once the block ends."""

    def __init__(self) -> None:
        self.text = ""

    def last_line(self) -> str:
        """The last non-empty line, useful to explain a failure."""
        lines = [line.strip() for line in self.text.splitlines() if line.strip()]
        return lines[-1][:200] if lines else ""


@contextlib.contextmanager
def quiet() -> Iterator[Captured]:
    """Silence warnings, logging and printed output (Python and native) inside the block."""
    captured = Captured()
    python_sink = io.StringIO()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    previous_disable = logging.root.manager.disable
    with tempfile.TemporaryFile(mode="w+b") as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            for fd in saved:
                os.dup2(sink.fileno(), fd)
            with contextlib.redirect_stdout(python_sink), contextlib.redirect_stderr(python_sink):
                yield captured
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            logging.disable(previous_disable)
            sink.seek(0)
            native = sink.read().decode("utf-8", "replace")
            captured.text = native + python_sink.getvalue()


@contextlib.contextmanager
def native_stderr() -> Iterator[Captured]:
    """Keep what native code writes to file descriptor 2 (log lines of a C++ core, say) off the
    terminal, while Python's `sys.stderr` (error lines, the progress bar) still reaches it."""
    captured = Captured()
    sys.stderr.flush()
    python_stderr = sys.stderr
    saved = os.dup(2)
    swapped = None
    if _writes_to_fd(python_stderr, 2):
        swapped = io.TextIOWrapper(
            io.FileIO(saved, "w", closefd=False),
            encoding=python_stderr.encoding,
            errors=python_stderr.errors,
            line_buffering=True,
        )
        sys.stderr = swapped
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            os.dup2(sink.fileno(), 2)
            yield captured
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            sys.stderr = python_stderr
            if swapped is not None:
                swapped.close()  # the wrapper only (closefd=False): `saved` is closed next
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", "replace")


def _writes_to_fd(stream: object, fd: int) -> bool:
    """The stream writes to descriptor `fd` (False for an in-memory stream, as under a test runner)."""
    try:
        return stream.fileno() == fd  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False
