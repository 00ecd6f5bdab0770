"""The `ens` process: stop signals, exit codes, `--debug` / ENS_DEBUG, and the one-line messages for
interrupts and for bugs. Only the command line (`cli/`) and the entry point (`entry.py`) use it: the
library takes what it needs of the process as arguments (docs/architecture.md).

Standard library only: `entry.main()` is in charge before numpy, ONNX Runtime and the commands load,
so Ctrl-C, SIGTERM or SIGHUP while `ens` is still starting end in one line too, never a traceback.
"""

from __future__ import annotations

import os
import signal

from ensemble.errors import first_line

_debug = False


class Stopped(BaseException):
    """Raised in the main thread by SIGTERM or SIGHUP. Like KeyboardInterrupt, no `except Exception`
    swallows it and every cleanup (`finally`, context managers, temp files) runs on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def handle_stop_signals() -> None:
    """Turn SIGTERM and SIGHUP into `Stopped` and Ctrl-C into KeyboardInterrupt; repeats of a stop
    signal are ignored while the cleanup runs."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in stop_signals():
        signal.signal(signum, _raise_stopped)


def stop_signals() -> list[int]:
    return [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]


def _raise_stopped(signum: int, frame: object) -> None:
    for other in stop_signals():
        signal.signal(other, signal.SIG_IGN)
    raise Stopped(signum)


def exit_while_loading(signum: int, frame: object) -> None:
    """Nothing is written while the modules load: leave at once, without unwinding through the
    initialisation of native extensions (an exception there can abort the process)."""
    os.write(2, f"error: {_describe(signum)} while starting; nothing was written\n".encode())
    os._exit(128 + signum)


def interrupt_exit_code(exc: BaseException) -> int:
    """The shell convention 128 + signal number: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return 128 + _signum(exc)


def interrupt_message(exc: BaseException) -> str:
    """What the user sees after Ctrl-C or a stop signal (the temp files are gone by then)."""
    return f"{_describe(_signum(exc))}; no partial output was written and existing files are unchanged"


def _signum(exc: BaseException) -> int:
    return exc.signum if isinstance(exc, Stopped) else int(signal.SIGINT)


def _describe(signum: int) -> str:
    return "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"


def internal_error(exc: BaseException) -> str:
    """One line for an unexpected exception (a bug, not a user mistake) that points at --debug."""
    detail = f": {first_line(exc)}" if str(exc).strip() else ""
    return (
        f"unexpected {type(exc).__name__}{detail}; this is a bug in ens, not in your input: "
        "rerun with `ens --debug ...` (or ENS_DEBUG=1) for the full traceback and report it"
    )


def set_debug(enabled: bool) -> None:
    """Record the global `ens --debug` option of this invocation."""
    global _debug
    _debug = bool(enabled)


def debug_enabled() -> bool:
    """`--debug` was given, or ENS_DEBUG is set to anything but empty, 0, false, no or off."""
    env = os.environ.get("ENS_DEBUG", "").strip().lower()
    return _debug or env not in ("", "0", "false", "no", "off")
